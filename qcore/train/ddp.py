"""QAT on torch.distributed: DistributedDataParallel over N processes, gloo on CPUs, NCCL on CUDA GPUs.

`launch(run_qat, nproc, ...)` (what `run_qat(nproc=N)` and `python -m qcore qat --nproc N` call) starts N
processes; `torchrun --nproc-per-node N -m qcore qat ...` starts them itself and each one finds its rank
in the environment (`from_environment`). In every rank the same seed gives the same calibration and
the same global batches; each rank trains on its stride of the global batch (what DistributedSampler
does to one permutation), and DDP averages the gradients, so a step equals the single-process step on
the whole global batch: the learning rate stays the single-process one (same global batch, nothing to
rescale). Rank 0 alone evaluates, times INT8, logs and writes the report; the others wait at a barrier.
Its progress and metric rows stream to the launcher through a queue. A rank that dies stops the run:
the launcher terminates the others and raises `RankLost` with the rank and its exit code.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import tempfile
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from qcore.train.device import resolve_device

__all__ = ["Ranks", "RankLost", "launch", "from_environment", "check_gpus_per_process", "KILL_RANK"]

KILL_RANK = "QX_DDP_KILL_RANK"  # a rank number: that process dies at once after joining (tests the lost-rank path)


class RankLost(RuntimeError):
    """A QAT process stopped before the run finished; the whole run is stopped."""


@dataclass
class Ranks:
    """This process's place in the group, and the few collectives the trainer needs."""

    rank: int
    world: int
    device: str
    backend: str

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def broadcast_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.long, device=self.device if self.backend == "nccl" else "cpu")
        dist.broadcast(t, 0)
        return int(t.item())

    def barrier(self) -> None:
        dist.barrier()

    def describe(self) -> dict:
        return {"engine": "torch.distributed", "world": self.world, "device": self.device, "backend": self.backend}


def check_gpus_per_process(device: str, world: int) -> None:
    """NCCL needs a GPU of its own for each process ("Duplicate GPU detected" deep inside the first
    collective otherwise): refuse before any process starts, saying what to ask for instead."""
    if device.startswith("cuda") and world > torch.cuda.device_count():
        raise ValueError(f"{world} processes on CUDA need {world} GPUs (NCCL gives each process its own GPU), "
                         f"but {torch.cuda.device_count()} is visible: use --nproc {torch.cuda.device_count()} "
                         "or --device cpu")


def _join_group(rank: int, world: int, device: str, init: str) -> Ranks:
    device = resolve_device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    check_gpus_per_process(device, world)
    if device.startswith("cuda"):
        device = f"cuda:{rank % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world, timeout=timedelta(minutes=30))
    return Ranks(rank, world, device, backend)


def _rank_main(train, rank: int, world: int, init: str, device: str, threads: int, out, kwargs: dict) -> None:
    """One rank: join the group, fine-tune with `train` (run_qat), and (rank 0) send progress, metrics and the
    result back."""
    torch.set_num_threads(threads)
    lead = rank == 0
    try:
        ranks = _join_group(rank, world, device, init)
        if os.environ.get(KILL_RANK) == str(rank):  # fault injection for the lost-rank test
            os._exit(9)
        result = train(**kwargs, progress=(lambda f, m: out.put(("progress", f, m))) if lead else None,
                         on_metric=(lambda row: out.put(("metric", row))) if lead else None, ranks=ranks)
        if lead:
            out.put(("result", pickle.dumps(result)))
    except ValueError as exc:  # a user-facing error (bad recipe, data): the launcher re-raises it as is
        out.put(("error", str(exc)))
        raise SystemExit(3)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _handle(msg, progress, on_metric):
    kind = msg[0]
    if kind == "progress" and progress:
        progress(msg[1], msg[2])
    elif kind == "metric" and on_metric:
        on_metric(msg[1])
    elif kind == "error":
        raise ValueError(msg[1])
    return pickle.loads(msg[1]) if kind == "result" else None


def _lost(procs) -> str | None:
    for rank, p in enumerate(procs):
        if p.exitcode not in (None, 0):
            return f"QAT rank {rank} of {len(procs)} stopped (exit code {p.exitcode}): the distributed run is stopped"
    return None


def _shippable(model):
    """What the ranks load: a registry model by name (its loader's closures do not pickle), else the model."""
    from qcore.zoo.models import LoadedModel, list_models

    if isinstance(model, LoadedModel) and model.name in {s.name for s in list_models()} and \
            model.spec.family != "user":
        return model.name
    try:
        pickle.dumps(model)
    except Exception:  # noqa: BLE001 - any pickling failure means the same thing here
        raise ValueError("distributed QAT needs a model the processes can load: a registry name or a model file")
    return model


def launch(train, nproc: int, device: str, progress, on_metric, **kwargs):
    """Run `train` (run_qat, passed in so this module need not import the QAT package that calls it) on `nproc`
    processes on this machine; returns rank 0's QATResult."""
    if nproc < 1:
        raise ValueError("--nproc must be at least 1")
    check_gpus_per_process(resolve_device(device), nproc)
    recipe = kwargs.get("recipe")
    if recipe is not None and recipe.batch_size % nproc:
        raise ValueError(f"the global batch ({recipe.batch_size}) must split evenly over {nproc} processes")
    kwargs["model"] = _shippable(kwargs["model"])
    threads = max(1, (kwargs.pop("threads", None) or torch.get_num_threads()) // nproc)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        procs = [ctx.Process(target=_rank_main, args=(train, r, nproc, init, device, threads, out, kwargs)) for r in range(nproc)]
        for p in procs:
            p.start()
        try:
            return _collect(procs, out, progress, on_metric)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join(10)


def _collect(procs, out, progress, on_metric):
    """Drain rank 0's messages until its result arrives; a rank that dies first ends the wait."""
    while True:
        try:
            msg = out.get(timeout=0.5)
        except queue_mod.Empty:
            lost = _lost(procs)
            if lost:
                raise RankLost(lost) from None
            continue
        result = _handle(msg, progress, on_metric)
        if result is not None:
            return result


def from_environment() -> Ranks | None:
    """Under torchrun (RANK/WORLD_SIZE set): join the group it set up; None in a plain process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return _join_group(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                       os.environ.get("QX_DEVICE", "auto"), "env://")

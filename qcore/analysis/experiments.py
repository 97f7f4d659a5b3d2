"""Whole experiments built from the engine's parts, shared by the CLI, the app and the benchmarks.

`compare_methods` is the calibration experiment: one statistics pass, then every range method
applied to those same statistics and evaluated end to end against FP32.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import torch

from qcore.quant.calibration import parse_method
from qcore.zoo.data import ImageSet, calibration_subset, eval_subset
from qcore.analysis.evaluate import batches, evaluate, layer_errors
from qcore.zoo.models import LoadedModel, load_model
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim

__all__ = ["parse_methods", "default_data", "check_compatible", "timed_pass", "compare_methods", "calibration_study",
           "weight_ranges", "clip_activations", "clipping_experiment"]


def parse_methods(text: str) -> list[str]:
    """'max,percentile:99.99,entropy' -> validated method list (duplicates dropped, order kept)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ValueError("give at least one calibration method")
    for m in methods:
        parse_method(m)
    return list(dict.fromkeys(methods))


def default_data(loaded: LoadedModel) -> str:
    """The dataset a model is evaluated on when none is named."""
    if loaded.spec.dataset == "fashion-mnist":
        return "fashion-mnist"
    raise ValueError(
        f"{loaded.name} classifies {loaded.spec.dataset} images: choose a dataset with those classes "
        "(e.g. imagefolder:PATH with ImageNet synset-named folders)"
    )


def run_identity(loaded: LoadedModel, data: str | None, seed: int, calib_size: int) -> dict:
    """What every report starts with: which model (name and weights digest) on which data."""
    return {"model": loaded.name, "model_id": loaded.info["sha256"][:16], "seed": seed, "calib_size": calib_size,
            "data": data}


def check_compatible(loaded: LoadedModel, data: ImageSet) -> None:
    """Refuse to score a model on data whose labels mean something else."""
    spec = loaded.spec
    if spec.dataset == "fashion-mnist" and data.name != "fashion-mnist":
        raise ValueError(f"{spec.name} was trained on Fashion-MNIST; {data.name} has different classes")
    if spec.dataset == "imagenet" and len(data.class_names) != 1000:
        raise ValueError(
            f"{spec.name} predicts the 1000 ImageNet classes; {data.name} has {len(data.class_names)} classes. "
            "Name the image folders by ImageNet synset id (n01440764, ...) to evaluate it."
        )
    h, w = data.images.shape[-2:]
    want = spec.input_shape[1:]
    if spec.preprocess.crop is None and (h, w) != tuple(want):
        raise ValueError(f"{data.name} has {h}x{w} images; {spec.name} takes {want[0]}x{want[1]} inputs")
    if int(data.labels.max()) >= len(spec.class_names):
        raise ValueError(f"{data.name} has labels up to {int(data.labels.max())}; {spec.name} has {len(spec.class_names)} classes")


@torch.no_grad()
def timed_pass(fn: Callable[[torch.Tensor], object], xs: list[torch.Tensor]) -> float:
    """Seconds to run `fn` over pre-built batches (preprocessing excluded)."""
    start = time.perf_counter()
    for x in xs:
        fn(x)
    return time.perf_counter() - start


def compare_methods(
    model: str | LoadedModel,
    data: str | None = None,
    methods: list[str] = ("max", "percentile:99.99", "entropy", "mse"),
    bits: int = 8,
    weight_bits: int = 8,
    granularity: str = "channel",
    calib_size: int = 512,
    eval_size: int | None = None,
    seed: int = 0,
    weights: str | None = None,
    config: QuantConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Accuracy and FP32 agreement of every calibration method, from one statistics pass."""
    say = progress or (lambda msg: None)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights=weights)
    data_name = data or default_data(loaded)
    calib = calibration_subset(data_name, calib_size, seed)
    evald = eval_subset(data_name, eval_size, seed)
    check_compatible(loaded, evald)
    if config is None:
        config = QuantConfig().with_default(act_bits=bits, weight_bits=weight_bits, weight_granularity=granularity)
    pre = loaded.spec.preprocess

    say(f"FP32 evaluation on {len(evald)} images")
    fp32 = evaluate(loaded.module, pre, evald)
    sim = QuantSim(loaded.module, config)
    calib_batches = list(batches(calib.images, pre))
    say(f"statistics pass over {len(calib)} calibration images")
    fp32_seconds = timed_pass(loaded.module, calib_batches)
    start = time.perf_counter()
    sim.collect_stats(calib_batches)
    stats_seconds = time.perf_counter() - start

    rows = []
    for m in methods:
        say(f"evaluating {m}")
        start = time.perf_counter()
        sim.apply_ranges(method=m)
        result = evaluate(sim, pre, evald)
        rows.append({
            "method": m,
            "accuracy": result.top1,
            "top5": result.top5,
            "agreement": result.agreement_with(fp32),
            "seconds": round(time.perf_counter() - start, 3),
        })
    return {
        "model": loaded.name,
        "model_id": loaded.info["sha256"][:16],
        "data": data_name,
        "calib_size": len(calib),
        "eval_size": len(evald),
        "seed": seed,
        "act_bits": config.default.act_bits,
        "weight_bits": config.default.weight_bits,
        "granularity": config.default.weight_granularity,
        "fp32_accuracy": fp32.top1,
        "fp32_top5": fp32.top5,
        "methods": rows,
        "stats_pass_seconds": round(stats_seconds, 4),
        "fp32_pass_seconds": round(fp32_seconds, 4),
        "quantizers": len(sim.points),
        "unsupported_layers": sim.unsupported,
        "config": config.to_dict(),
    }


MAX_WEIGHT_SAMPLE = 100_000
CLIPPABLE = (torch.nn.GELU, torch.nn.SiLU, torch.nn.Hardswish, torch.nn.Mish)


def clip_activations(loaded: LoadedModel, bound: float) -> LoadedModel:
    """A copy whose GELU/SiLU outputs are clamped to [-bound, bound] (GELU10 when bound = 10).

    Bounding an unbounded activation caps the outliers that stretch its quantization range; the
    quantizer then sits after the clamp, so calibration sees the bounded range.
    """
    import copy

    from qcore.zoo.models import finish_loading

    if bound <= 0:
        raise ValueError("the clipping bound must be positive")
    module = copy.deepcopy(loaded.module)
    targets = [name for name, m in module.named_modules() if isinstance(m, CLIPPABLE)]
    if not targets:
        raise ValueError(f"{loaded.name} has no GELU/SiLU/Hardswish/Mish activations to clip")
    for name in targets:
        parent, _, attr = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, attr, torch.nn.Sequential(getattr(owner, attr), torch.nn.Hardtanh(-bound, bound)))
    spec = replace(loaded.spec, name=f"{loaded.name}+clip{bound:g}", build=lambda: module)
    return finish_loading(spec, module, {**loaded.info, "clipped_activations": len(targets), "bound": bound})


def clipping_experiment(
    model: str | LoadedModel,
    bound: float = 10.0,
    methods: list[str] = ("max", "percentile:99.99"),
    act_bits: int = 8,
    calib_size: int = 512,
    eval_size: int | None = 2000,
    seed: int = 0,
    data: str | None = None,
    progress: Callable[[str, float | None], None] | None = None,
) -> dict:
    """The GELU10 experiment: accuracy per method with and without clipped activations."""
    say = progress or (lambda msg, fraction=None: None)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    clipped = clip_activations(loaded, bound)
    rows = []
    for i, (label, m) in enumerate((("original", loaded), (f"clipped to ±{bound:g}", clipped))):
        say(f"{label}: statistics pass and {len(methods)} methods", i / 2)
        rep = compare_methods(m, data=data, methods=list(methods), bits=act_bits, calib_size=calib_size,
                              eval_size=eval_size, seed=seed)
        for row in rep["methods"]:
            rows.append({"model": label, "method": row["method"], "accuracy": row["accuracy"],
                         "fp32_accuracy": rep["fp32_accuracy"]})
    say("done", 1.0)
    return {"model": loaded.name, "bound": bound, "act_bits": act_bits, "rows": rows,
            "clipped_activations": clipped.info["clipped_activations"]}


def weight_ranges(sim: QuantSim) -> dict[str, dict]:
    """Per-output-channel min/max of every (BN-folded) Conv2d/Linear weight, as deployed."""
    out = {}
    for name, wl in sim.weight_layers.items():
        w = wl.layer.weight.detach()
        flat = w.reshape(w.shape[0], -1)
        values = w.flatten()
        if values.numel() > MAX_WEIGHT_SAMPLE:  # a fixed random sample is plenty for a distribution plot
            values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:MAX_WEIGHT_SAMPLE]]
        out[name] = {"min": flat.min(1).values.tolist(), "max": flat.max(1).values.tolist(), "values": values.tolist()}
    return out


def calibration_study(
    model: str | LoadedModel,
    data: str | None = None,
    methods: list[str] = ("max", "percentile:99.99", "entropy", "mse"),
    act_bits: tuple[int, ...] = (8, 6, 4),
    weight_bits: int = 8,
    granularity: str = "channel",
    symmetric: bool = False,
    calib_size: int = 512,
    eval_size: int | None = 2000,
    seed: int = 0,
    progress: Callable[[str, float | None], None] | None = None,
) -> dict:
    """Everything the calibration page shows, from ONE statistics pass.

    Returns the QuantSim (its `.stats` hold every histogram), the ranges every method picks per
    layer, accuracy and FP32 agreement per method and activation bit width, and per-layer SQNR
    per method at the first bit width.
    """
    say = progress or (lambda msg, fraction=None: None)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    data_name = data or default_data(loaded)
    calib = calibration_subset(data_name, calib_size, seed)
    evald = eval_subset(data_name, eval_size, seed)
    check_compatible(loaded, evald)
    pre = loaded.spec.preprocess
    config = QuantConfig().with_default(act_bits=act_bits[0], weight_bits=weight_bits, weight_granularity=granularity,
                                        act_symmetric=symmetric)
    sim = QuantSim(loaded.module, config)
    calib_batches = list(batches(calib.images, pre))
    say(f"statistics pass over {len(calib)} images", 0.0)
    start = time.perf_counter()
    sim.collect_stats(calib_batches, progress=lambda n: say(f"statistics pass: {n}/{len(calib)} images", 0.2 * n / len(calib)))
    stats_seconds = time.perf_counter() - start
    say("FP32 evaluation", 0.2)
    fp32 = evaluate(loaded.module, pre, evald)
    runs = [(m, b) for b in act_bits for m in methods]
    rows, ranges, sqnr = [], {}, {}
    probe = calib_batches[0][:64]
    for i, (m, b) in enumerate(runs):
        say(f"evaluating {m} at {b}-bit activations ({i + 1}/{len(runs)})", 0.25 + 0.75 * i / len(runs))
        sim.configure(config.with_default(act_bits=b))
        applied = sim.apply_ranges(method=m)
        result = evaluate(sim, pre, evald)
        rows.append({"method": m, "act_bits": b, "accuracy": result.top1, "agreement": result.agreement_with(fp32)})
        if b == act_bits[0]:
            ranges[m] = {name: r.to_dict() for name, r in applied.items()}
            sqnr[m] = {name: e["sqnr_db"] for name, e in layer_errors(sim, probe).items()}
    sim.configure(config)
    sim.apply_ranges(method=methods[0])
    say("done", 1.0)
    return {
        "model": loaded.name, "model_id": loaded.info["sha256"][:16], "data": data_name, "calib_size": len(calib),
        "eval_size": len(evald), "seed": seed,
        "fp32_accuracy": fp32.top1, "methods": list(methods), "act_bits": list(act_bits),
        "weight_bits": weight_bits, "granularity": granularity, "symmetric": symmetric,
        "accuracy": rows, "ranges": ranges, "layer_sqnr_db": sqnr,
        "points": [{"name": p.name, "kind": p.kind, "type": p.module_type} for p in sim.points],
        "weights": weight_ranges(sim), "stats_pass_seconds": round(stats_seconds, 3), "sim": sim,
        "unsupported_layers": sim.unsupported,
    }

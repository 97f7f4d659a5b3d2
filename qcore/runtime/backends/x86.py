"""PyTorch x86 INT8 (torch.ao FX graph mode, fbgemm/oneDNN kernels) from a calibrated QuantSim.

This is the only module that touches torch.ao.quantization: it is deprecated in torch 2.14 (it
warns) but remains the eager/FX INT8 path that runs without torchao.

No calibration happens here. The float graph comes from the QuantSim itself (BN already folded,
quantizers removed), prepare_fx inserts its observers, and every observer is given the range of
the QuantSim quantizer at the same place in the graph. Observers after max-pool, average-pool,
flatten or ReLU take the range of the quantizer they follow, as x86 shares qparams there.
"""

from __future__ import annotations

import copy
import io
import threading
import warnings
from contextlib import contextmanager

import torch
from torch import fx, nn

from qcore.runtime.backends.common import Runner
from qcore.quant.calibration import compute_range
from qcore.quant.tracing import exclusive_tracing

__all__ = ["x86_runner", "float_graph", "dynamic_x86_runner", "save_torchscript"]

PASS_THROUGH_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Flatten,
                        nn.Dropout, nn.Identity, nn.Hardtanh)
PASS_THROUGH_FUNCTIONS = {torch.flatten, torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6,
                          torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.max_pool2d,
                          torch.nn.functional.dropout, torch.nn.functional.hardtanh}
PASS_THROUGH_METHODS = {"flatten", "view", "reshape", "relu", "mean", "contiguous"}


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.ao")
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace/save/freeze
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _relu6_as_relu(gm: fx.GraphModule) -> int:
    """Turn ReLU6 into ReLU where the quantizer right after it clips within [0, 6] anyway.

    Exact: values above 6 lie above the clip range and quantize to its top either way. It pays:
    x86 fuses conv + ReLU into one INT8 kernel, while ReLU6 runs as a separate op after each conv
    (about a sixth of MobileNetV2's INT8 time at batch 1)."""
    modules = dict(gm.named_modules())
    changed = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_module" and str(node.target).startswith("quantizers.")):
            continue
        q, src = modules[node.target], node.args[0]
        if q.mode != "quant" or q.range is None or not (0.0 <= q.range.clip_min and q.range.clip_max <= 6.0):
            continue
        is_relu6 = (src.op == "call_module" and isinstance(modules.get(src.target), nn.ReLU6)) or (
            src.op == "call_function" and src.target is torch.nn.functional.relu6)
        if is_relu6 and len(src.users) == 1:
            src.op, src.target, src.args, src.kwargs = "call_function", torch.nn.functional.relu, (src.args[0],), {}
            changed += 1
    return changed


def float_graph(sim) -> fx.GraphModule:
    """A float copy of the QuantSim's graph: folded BN, weights as simulated, no quantizers."""
    gm = copy.deepcopy(sim.model)
    _relu6_as_relu(gm)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("quantizers."):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    for name in sim.weight_layers:
        layer = gm.get_submodule(name).float_layer()  # float (BN-folded); observers give it the sim's grid
        parent, _, attr = name.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, layer)
    del gm.quantizers
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm


def _producer(node: fx.Node, modules: dict, points: set[str]) -> str | None:
    """The QuantSim point whose range an observer on `node`'s output should take."""
    while True:
        if node.op == "placeholder":
            return "input"
        if node.op == "call_module" and node.target in points:
            return node.target
        if node.op == "call_function" and node.name in points:
            return node.name
        passes = (
            (node.op == "call_module" and "activation_post_process" in str(node.target))
            or (node.op == "call_module" and isinstance(modules.get(node.target), PASS_THROUGH_MODULES))
            or (node.op == "call_function" and node.target in PASS_THROUGH_FUNCTIONS)
            or (node.op == "call_method" and node.target in PASS_THROUGH_METHODS)
        )
        if not passes or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]


def _weight_observer(scheme):
    """An observer that computes exactly the sim's weight grid: same integer range (7-bit weights on
    CPUs without VNNI, fewer bits where configured), same granularity, same symmetric formula."""
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

    if scheme.granularity == "channel":
        return PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                  quant_min=scheme.qmin, quant_max=scheme.qmax)
    return MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                    quant_min=scheme.qmin, quant_max=scheme.qmax)


def _qconfig_mapping(sim):
    from torch.ao.quantization import MinMaxObserver, QConfig, QConfigMapping

    activation = MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                          reduce_range=sim.config.reduce_range)
    mapping = QConfigMapping().set_global(QConfig(activation=activation, weight=_weight_observer(
        sim.config.for_layer("").weight_scheme())))
    for name, wl in sim.weight_layers.items():
        cfg = sim.config.for_layer(name)
        if not (cfg.quantizes_weight and cfg.quantizes_act and cfg.act_dtype == "int" and cfg.weight_dtype == "int"):
            mapping.set_module_name(name, None)
        else:
            mapping.set_module_name(name, QConfig(activation=activation, weight=_weight_observer(cfg.weight_scheme())))
    return mapping


def _check_deployable(sim) -> None:
    bad = []
    for q in sim.quantizers.values():
        if q.mode == "quant" and q.dtype == "int" and (q.scheme.bits != 8 or q.scheme.symmetric):
            bad.append(f"{q.name} ({q.scheme.bits}-bit {'symmetric' if q.scheme.symmetric else 'asymmetric'} activations)")
    for name, wl in sim.weight_layers.items():
        if wl.enabled and wl.cfg.weight_dtype == "int" and (wl.cfg.weight_granularity == "group" or not wl.cfg.weight_symmetric):
            bad.append(f"{name} ({wl.cfg.weight_granularity}, {'symmetric' if wl.cfg.weight_symmetric else 'asymmetric'} weights)")
    if bad:
        raise ValueError("x86 INT8 kernels need 8-bit asymmetric activations and symmetric per-tensor/per-channel "
                         "weights; not deployable: " + ", ".join(bad[:8]))


def _set_observer_ranges(sim, prepared: fx.GraphModule) -> list[str]:
    """Give every observer torch.ao inserted the sim's range for the tensor it watches; returns the
    float layers' outputs that had to be quantized for an INT8 consumer."""
    modules = dict(prepared.named_modules(remove_duplicate=False))
    ranges = {q.name: q.range for q in sim.quantizers.values() if q.mode == "quant" and q.range is not None}
    points = set(sim.layer_names())
    unmapped, requantized = [], []
    for node in prepared.graph.nodes:
        if node.op != "call_module" or "activation_post_process" not in str(node.target):
            continue
        obs = prepared.get_submodule(node.target)  # shared observers are listed once in named_modules
        source = _producer(node.args[0], modules, points)
        rng = ranges.get(source)
        if rng is None and source in sim.stats:
            # A float layer feeding an INT8 one: x86 kernels need an INT8 input, so quantize it
            # with the default method from the same statistics (the simulation leaves it float).
            scheme = sim.config.default.act_scheme(sim.config.reduce_range)
            rng = compute_range(sim.stats[source], sim.config.default.act_method, scheme)
            requantized.append(source)
        if rng is None:
            unmapped.append(f"{node.args[0].name} (-> {source})")
            continue
        obs.min_val = torch.tensor(rng.clip_min)
        obs.max_val = torch.tensor(rng.clip_max)
    if unmapped:
        raise ValueError("x86 backend could not take ranges for: " + ", ".join(unmapped[:8]))
    return requantized


def _graph_facts(quantized: fx.GraphModule) -> tuple[dict[str, int], list[str], int]:
    """Op counts, the conv/linear layers left in float, and the quantize/dequantize transitions."""
    qmodules = dict(quantized.named_modules())
    ops: dict[str, int] = {}
    float_ops = []
    for node in quantized.graph.nodes:
        if node.op == "call_module":
            mod = qmodules[node.target]
            cls = type(mod)
            key = ("int8 " if ".quantized" in cls.__module__ else "") + cls.__name__
            float_compute = isinstance(mod, (nn.Conv2d, nn.Linear)) or any(isinstance(c, (nn.Conv2d, nn.Linear)) for c in mod.children())
            if float_compute and ".quantized" not in cls.__module__:
                float_ops.append(f"{node.target} ({cls.__name__})")
        elif node.op in ("call_function", "call_method"):
            key = getattr(node.target, "__name__", str(node.target))
        else:
            continue
        ops[key] = ops.get(key, 0) + 1
    transitions = sum(n for k, n in ops.items() if k in ("quantize_per_tensor", "dequantize"))
    return ops, float_ops, transitions


_ENGINE_LOCK = threading.RLock()


@contextmanager
def quantized_engine(engine: str):
    """torch's quantized engine is one process-wide setting, read while INT8 modules are converted, packed and
    traced: it is held under one lock for exactly that span and restored after, so two sessions' jobs building
    with different engines cannot switch it under each other (built modules keep their packed kernels)."""
    with _ENGINE_LOCK:
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            yield
        finally:
            torch.backends.quantized.engine = previous


def x86_runner(sim, input_shape: tuple[int, ...], threads: int, engine: str = "x86") -> Runner:
    """Convert the calibrated QuantSim into a torch.ao INT8 model with the sim's ranges.

    `engine` is torch's quantized engine: "x86" (fbgemm with oneDNN for some ops) or "onednn"
    (oneDNN throughout, which uses AMX tiles for INT8 where the CPU has them)."""
    _check_deployable(sim)
    with _quiet():
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        example = (torch.zeros(1, *input_shape),)
        with quantized_engine(engine):
            with exclusive_tracing():  # prepare_fx traces: keep other threads' forward passes safe
                prepared = prepare_fx(float_graph(sim), _qconfig_mapping(sim), example)
            requantized = _set_observer_ranges(sim, prepared)
            quantized = convert_fx(prepared)
            scripted = torch.jit.freeze(torch.jit.trace(quantized, example).eval())
    buf = io.BytesIO()
    with _quiet():
        torch.jit.save(scripted, buf)
    ops, float_ops, transitions = _graph_facts(quantized)
    run = _per_batch_size(quantized, scripted, example[0].shape[0], engine)
    notes = [f"quantized engine: {engine}"]
    if requantized:
        notes.append("x86 quantizes the outputs of float layers that feed INT8 layers (the simulation keeps them "
                     "float): " + ", ".join(sorted(set(requantized))))
    return Runner("x86", "int8", run, buf.getbuffer().nbytes, None, ops, float_ops, transitions,
                  notes=notes, artifact=scripted, shape_specialized=True)


def _per_batch_size(quantized: fx.GraphModule, scripted, traced_batch: int, engine: str, keep: int = 4):
    """A runner holding one frozen TorchScript copy per batch size.

    TorchScript's executor optimizes a module for the input shapes of its first calls: a copy first
    run at batch 250 (an evaluation) ran batch 1 at half its speed (0.92 vs 0.44 ms, fm_resnet), so
    timings at batch 1 after an evaluation were wrong by 2x. Each batch size gets its own copy,
    traced for it on first use (a few of them; beyond that, the copy traced first serves)."""
    copies = {traced_batch: scripted}
    lock = threading.Lock()

    def run(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        module = copies.get(b)
        if module is None:
            with lock, _quiet(), torch.no_grad(), quantized_engine(engine):
                module = copies.get(b)
                if module is None and len(copies) < keep:
                    module = copies[b] = torch.jit.freeze(torch.jit.trace(quantized, (x,)).eval())
                module = module or scripted
        with torch.no_grad():
            return module(x)

    return run


def quantize_linear_dynamic(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `model` with every nn.Linear replaced by torch's dynamic INT8 Linear (int8 weights, activations
    quantized at run time), and the names of the layers that changed (convolutions have no dynamic kernel in
    torch and stay as they were)."""
    with _quiet():
        from torch.ao.quantization import quantize_dynamic

        qmodel = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    before = dict(model.named_modules())
    changed = [n for n, m in qmodel.named_modules() if n and n in before and type(m) is not type(before[n])
               and isinstance(before[n], nn.Linear)]
    return qmodel, changed


def dynamic_x86_runner(model: nn.Module, threads: int) -> Runner:
    """torch dynamic quantization as a deploy path (`quantize_linear_dynamic`)."""
    qmodel, _ = quantize_linear_dynamic(model)
    buf = io.BytesIO()
    torch.save(qmodel.state_dict(), buf)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return qmodel(x)

    convs = sum(isinstance(m, nn.Conv2d) for m in qmodel.modules())
    return Runner("x86_dynamic", "dynamic", run, buf.getbuffer().nbytes, None, {},
                  [f"{convs} Conv2d stay float"] if convs else [], 0)


def save_torchscript(scripted, path) -> None:
    """Write the INT8 TorchScript model; torch.jit.load(path) runs it without this project."""
    with _quiet():
        torch.jit.save(scripted, str(path))

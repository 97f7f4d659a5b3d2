"""QuantSim: a float model plus weight and activation quantizers, built from a `QuantConfig`.

The model is deep-copied and traced with torch.fx (the caller's model is never touched), BN is
folded into convs, every Conv2d/Linear is wrapped with a weight quantizer, and activation
quantizers are inserted where a deployed INT8 model requantizes:
- the model input;
- each Conv2d/Linear output, after its ReLU/ReLU6 when one directly follows (INT8 kernels fuse
  conv + relu and quantize once);
- each residual add (after its ReLU when fused);
- each activation INT8 kernels do not fuse (GELU, SiLU, Hardswish, Sigmoid, ...).

Conv/Linear quantizers take the layer's module name ("layers.0.conv1"), so one per-layer config
entry covers both its weights and its output. Other points take their module name, or the graph
node name for functions ("add_1").

Lifecycle: `collect_stats(batches)` runs one pass in observe mode and keeps a `TensorStats` per
activation quantizer; `apply_ranges()` turns them into clip ranges with each layer's method (or
one method for all) and switches to quantized mode. Ranges can be re-applied any number of times
without another pass.
"""

from __future__ import annotations

import copy
import math
import operator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from qcore.quant.calibration import RangeResult, compute_range, fixed_range
from qcore.quant.fakequant import fake_cast, fake_quantize_scheme
from qcore.quant.fold import fold_bn_in_graph
from qcore.quant.inventory import FloatLayer, LayerInventory
from qcore.quant.progress import Msg, Progress
from qcore.quant.qconfig import LayerConfig, QuantConfig
from qcore.quant.qparams import QScheme, compute_qparams, minmax
from qcore.quant.stats import TensorStats
from qcore.quant.tracing import symbolic_trace

__all__ = ["QuantSim", "image_count", "Mode", "RangeMode", "ActQuantizer", "QuantWeightLayer", "QuantPoint", "TraceError",
           "NothingQuantized"]

FUSED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)  # clamps: folded into the requantization
FUSED_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.hardtanh, torch.clamp)
UNFUSED_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Mish, nn.LeakyReLU, nn.ELU)
UNFUSED_FUNCTIONS = (F.gelu, F.silu, F.hardswish, torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.tanh)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
EXPORT_BUFFERS = ("export_w", "export_scale", "export_zp")


class TraceError(RuntimeError):
    """The model cannot be traced by torch.fx, so quantizers cannot be placed."""


class NothingQuantized(ValueError):
    """Nothing in the model would be quantized: every "INT8" number would be the FP32 model's."""


@dataclass(frozen=True)
class QuantPoint:
    """One activation quantizer: its name, what produces it, and the layer it belongs to."""

    name: str
    kind: str  # "input", "conv", "linear", "add", "act"
    module_type: str


class Mode(StrEnum):
    """What an activation quantizer does with the tensor passing through."""

    FLOAT = "float"  # nothing
    OBSERVE = "observe"  # collect statistics (the calibration pass)
    QUANT = "quant"  # fake-quantize (or cast to FP16/BF16)


class RangeMode(StrEnum):
    """Where a quantizing activation quantizer's grid comes from while the sim trains (QAT)."""

    FIXED = "fixed"  # the calibrated range, unchanged
    OBSERVED = "observe"  # moving-average min/max of the training batches, until frozen
    LEARNED = "learn"  # the scale is a parameter trained with the LSQ gradient


EMA = 0.01  # torch.ao's moving-average observer constant


class ActQuantizer(nn.Module):
    """Observes (collects stats), fake-quantizes, or passes through one activation tensor.

    Its state changes only through its methods: `set_range` (calibration), `observe_ranges`,
    `learn_range`, `stop_observing` and `freeze_range` (QAT); QuantSim.torch_fake_quant sets the
    export mode (torch's own fake-quant ops, which ONNX export turns into Q/DQ pairs)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.mode = Mode.FLOAT
        self.stats = TensorStats(name)
        self.scheme: QScheme | None = None
        self.dtype = "fp32"
        self.range: RangeResult | None = None
        self.range_mode = RangeMode.FIXED
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int32))
        self.capture: list | None = None  # set by QuantSim.capture(): (name, tensor) appended here
        self.torch_ops: str | None = None  # "u8"/"s8": use torch's fake-quant ops (ONNX Q/DQ export)
        self.learned_scale: nn.Parameter | None = None  # RangeMode.LEARNED
        self._running: torch.Tensor | None = None  # RangeMode.OBSERVED: running (min, max)

    def _apply(self, fn, recurse=True):
        """`.to(device)` also moves the running min/max that observe mode keeps as a plain tensor."""
        super()._apply(fn, recurse)
        if self._running is not None:
            self._running = fn(self._running)
        return self

    @property
    def quantizes_int(self) -> bool:
        return self.mode == Mode.QUANT and self.dtype == "int"

    def set_range(self, result: RangeResult | None, scheme: QScheme | None, dtype: str, exact: bool = False) -> None:
        """`exact`: the grid is the result's own scale and zero-point, for a fitted grid (a learned step size),
        which its clip range does not give back exactly on a symmetric scheme."""
        self.range, self.scheme, self.dtype = result, scheme, dtype
        if result is not None and scheme is not None:
            if exact:
                self._set_grid(torch.tensor(float(result.scale)), torch.tensor(int(result.zero_point)))
            else:
                self._set_grid(*compute_qparams(result.clip_min, result.clip_max, scheme))

    def _set_grid(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.scale, self.zero_point = scale.reshape(()), zero_point.reshape(()).to(torch.int32)

    def set_qparams(self, scale: float, zero_point: int, method: str) -> None:
        """Fix this quantizer's grid to `scale`/`zero_point` (ranges found by QAT rather than by a
        calibration method); the clip range follows from the grid, the error estimates are unknown."""
        qmin, qmax = self.scheme.qmin, self.scheme.qmax
        self.range = RangeResult(method, (qmin - zero_point) * scale, (qmax - zero_point) * scale, scale,
                                 int(zero_point), math.nan, math.nan)
        self._set_grid(torch.tensor(float(scale)), torch.tensor(int(zero_point)))

    # --- QAT range modes ----------------------------------------------------------------------
    def observe_ranges(self) -> None:
        """Follow the training batches' moving-average min/max (from the calibrated range) until frozen."""
        self.range_mode = RangeMode.OBSERVED
        self._running = torch.tensor([self.range.clip_min, self.range.clip_max], device=self.scale.device)

    def learn_range(self) -> nn.Parameter:
        """Make the scale a trainable parameter (LSQ); returns it for the optimizer."""
        self.range_mode = RangeMode.LEARNED
        self.learned_scale = nn.Parameter(self.scale.detach().clone().reshape(1))
        return self.learned_scale

    def sync_learned(self) -> None:
        """Copy a learned scale into the grid the exporters read (training may go on)."""
        if self.learned_scale is not None:
            self.scale = self.learned_scale.detach().abs().clamp_min(1e-12).reshape(())

    def stop_observing(self) -> None:
        """Keep the grid observed so far, fixed from now on."""
        if self.range_mode == RangeMode.OBSERVED:
            self.range_mode, self._running = RangeMode.FIXED, None

    def freeze_range(self, method: str) -> None:
        """Write the trained grid back as this quantizer's range (labelled `method`) and fix it."""
        self.sync_learned()
        self.learned_scale, self._running, self.range_mode = None, None, RangeMode.FIXED
        self.set_qparams(float(self.scale), int(self.zero_point), method)

    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x.detach())
        self._running.mul_(1 - EMA).add_(torch.stack([lo, hi]), alpha=EMA)
        self._set_grid(*compute_qparams(self._running[0].reshape(1), self._running[1].reshape(1), self.scheme))

    # --- forward -------------------------------------------------------------------------------
    def forward(self, x):
        if self.mode == Mode.OBSERVE:
            self.stats.update(x)
            out = x
        elif self.mode == Mode.QUANT:
            out = self._quantize(x)
        else:
            out = x
        if self.capture is not None:
            self.capture.append((self.name, x.detach(), out.detach()))
        return out

    def _quantize(self, x):
        if self.dtype in ("fp16", "bf16"):
            return fake_cast(x, self.dtype)
        if self.dtype != "int":
            return x
        if self.torch_ops:
            return self._torch_fake_quant(x)
        if self.range_mode == RangeMode.OBSERVED and self.training:
            self._observe(x)
        if self.range_mode == RangeMode.LEARNED:
            return self._learned_fake_quant(x)
        return fake_quantize_scheme(x, self.scale, self.zero_point, self.scheme)

    def _learned_fake_quant(self, x):
        """LSQ (Esser et al. 2020): the scale gets a gradient, scaled by 1/sqrt(features * qmax)."""
        grad_factor = 1.0 / math.sqrt(max(1, x[0].numel()) * self.scheme.qmax)
        zp = self.zero_point.to(torch.float32).reshape(1)
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, self.learned_scale, zp, self.scheme.qmin, self.scheme.qmax, grad_factor)

    def _torch_fake_quant(self, x):
        """The same grid through torch's op, which ONNX export turns into QuantizeLinear/DequantizeLinear.

        "s8" moves an unsigned 8-bit grid to int8 (zero-point - 128): identical values, signed storage.
        """
        qmin, qmax, zp = self.scheme.qmin, self.scheme.qmax, int(self.zero_point)
        if self.torch_ops == "s8" and qmin == 0:
            qmin, qmax, zp = qmin - 128, qmax - 128, zp - 128
        elif self.torch_ops == "u8" and qmin < 0:
            qmin, qmax, zp = qmin + 128, qmax + 128, zp + 128
        return torch.fake_quantize_per_tensor_affine(x, float(self.scale), zp, qmin, qmax)


class QuantWeightLayer(nn.Module):
    """A Conv2d or Linear whose weight is fake-quantized (or cast) on the way in."""

    def __init__(self, layer: nn.Module, name: str):
        super().__init__()
        self.layer = layer
        self.name = name
        self.cfg: LayerConfig | None = None
        self.enabled = False
        self._cached: torch.Tensor | None = None
        self.torch_ops = False  # True while exporting to ONNX
        self.pinned: dict[QScheme, tuple[torch.Tensor, torch.Tensor]] = {}  # see pin_grid
        self.scale_floor: torch.Tensor | None = None  # per output channel; see quant.bias_range
        # (weight, bias) before a recovery step rounded or corrected them: what the layer runs kept in float
        self.original: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _apply(self, fn, recurse=True):
        """`.to(device)` (QAT moves the sim to a GPU and back) also moves the grids kept as plain tensors,
        and drops the cached weight, which was quantized on the old device."""
        super()._apply(fn, recurse)
        self.pinned = {k: (fn(scale), fn(zp)) for k, (scale, zp) in self.pinned.items()}
        self.scale_floor = None if self.scale_floor is None else fn(self.scale_floor)
        if self.original is not None:
            self.original = (fn(self.original[0]), None if self.original[1] is None else fn(self.original[1]))
        self._cached = None
        return self

    def configure(self, cfg: LayerConfig) -> None:
        self.cfg = cfg
        self.enabled = cfg.quantizes_weight
        self._cached = None

    def forget_quantized(self) -> None:
        """Drop the cached quantized weight (the float weight changed)."""
        self._cached = None

    def remember_original(self) -> None:
        """Record the float weight and bias before a recovery step changes them (the first record wins).

        AdaRound and GPTQ store rounded weights in the layer's float weight (so quantizing again and exporting
        keep their rounding), and bias correction shifts the bias to make up for the weights' error. Kept in
        float, the layer is the FP32 one again: a sensitivity sweep's "this layer float", partial quantization,
        a diagnosis' activations-only run and every FP32 reference run these originals, not the rounded weights."""
        if self.original is None:
            bias = self.layer.bias
            self.original = (self.layer.weight.detach().clone(), None if bias is None else bias.detach().clone())

    def keep_current_weights(self) -> None:
        """From here on the layer's own weights are the model (QAT trains them): a float-kept layer takes its
        originals back, and no original is kept."""
        if self.original is not None and not self.enabled:
            self.layer.weight.data.copy_(self.original[0])
            if self.layer.bias is not None and self.original[1] is not None:
                self.layer.bias.data.copy_(self.original[1])
            elif self.layer.bias is not None:  # bias correction gave a bias-free layer one
                self.layer.bias.data.zero_()
        self.original = None
        self._cached = None

    def float_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) the layer runs when it is kept in float: the originals where a recovery step changed it."""
        return self.original if self.original is not None else (self.layer.weight, self.layer.bias)

    def float_layer(self) -> nn.Module:
        """A copy of the wrapped layer as this wrapper runs it in float (the float graph an INT8 backend converts)."""
        layer = copy.deepcopy(self.layer)
        if not self.enabled and self.original is not None:
            weight, bias = self.original
            layer.weight = nn.Parameter(weight.clone(), requires_grad=False)
            layer.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)
        return layer

    def begin_export(self) -> None:
        """Run through torch's fake-quant ops with the int8 weight held as buffers, so that an ONNX
        export writes them as initializers with QuantizeLinear/DequantizeLinear on top (constants
        would be folded)."""
        self.torch_ops = True
        if self.enabled:
            for name, t in zip(EXPORT_BUFFERS, self.int8_weight()):
                self.register_buffer(name, t)

    def end_export(self) -> None:
        self.torch_ops = False
        for name in EXPORT_BUFFERS:
            self._buffers.pop(name, None)

    @property
    def weight_scheme(self) -> QScheme:
        return self.cfg.weight_scheme()

    def quantized_weight(self) -> torch.Tensor:
        w = self.layer.weight
        if not self.enabled:
            return self.float_weights()[0]
        if self._cached is not None and not torch.is_grad_enabled():
            return self._cached
        wq = self.quantize(w)
        if not torch.is_grad_enabled():
            self._cached = wq
        return wq

    def pin_grid(self, scheme: QScheme, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Keep this grid for `scheme` whatever the weight's min/max becomes: AdaRound and GPTQ store
        weights that lie on it, and their rounding must survive being quantized again."""
        self.pinned[scheme] = (scale.detach().clone(), zero_point.detach().clone())
        self._cached = None

    def set_scale_floor(self, floor: torch.Tensor | None) -> None:
        """The smallest weight scale per output channel that keeps the int32 bias of an INT8 kernel
        in range (quant.bias_range); None for none."""
        self.scale_floor = None if floor is None else floor.detach().clone()
        self._cached = None

    def grid(self, w: torch.Tensor, scheme: QScheme, floor: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero-point) of `w` under `scheme`: a pinned grid, else from its min/max; a
        symmetric per-channel or per-tensor scale is raised to the scale floor where one is set."""
        if scheme in self.pinned:
            scale, zp = self.pinned[scheme]
        else:
            scale, zp = compute_qparams(*minmax(w.detach(), scheme), scheme)
        if not floor or self.scale_floor is None or not scheme.symmetric or scheme.granularity == "group":
            return scale, zp
        low = self.scale_floor if scheme.granularity == "channel" and scale.numel() > 1 else self.scale_floor.max()
        return torch.maximum(scale, low.reshape(scale.shape).to(scale.dtype)), zp

    def effective_scheme(self, w: torch.Tensor) -> QScheme:
        """The weight scheme as applied: one group spanning every input (stems, depthwise convs) is per-channel."""
        scheme = self.weight_scheme
        if scheme.granularity == "group" and w.shape[1] <= scheme.group_size:
            scheme = replace(scheme, granularity="channel", axis=0, group_size=0)
        if scheme.granularity == "group" and w.shape[1] % scheme.group_size:
            raise ValueError(f"{self.name}: {w.shape[1]} input channels do not divide into groups of {scheme.group_size}")
        return scheme

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """`w` fake-quantized (or cast) with this layer's weight config."""
        if self.cfg.weight_dtype == "int":
            scheme = self.effective_scheme(w)
            scale, zp = self.grid(w, scheme)
            return fake_quantize_scheme(w, scale, zp, scheme)
        return fake_cast(w, self.cfg.weight_dtype)

    @torch.no_grad()
    def int8_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(quantized weight values, per-channel scale, zero-point) on an int8 grid, as constants.

        Weights of fewer bits lie on a grid int8 holds exactly (same scale), so they deploy as
        int8 weights with the lower-bit values.
        """
        w = self.layer.weight.detach()
        scheme = self.weight_scheme
        if scheme.granularity == "group" or not scheme.symmetric or self.cfg.weight_dtype != "int":
            raise ValueError(f"{self.name}: only symmetric per-tensor or per-channel integer weights deploy as INT8")
        scale, zp = self.grid(w, scheme)
        if scheme.granularity == "tensor":
            scale, zp = scale.expand(w.shape[0]).contiguous(), zp.expand(w.shape[0]).contiguous()
        wq = fake_quantize_scheme(w, scale, zp, replace(scheme, granularity="channel", axis=0))
        return wq.clone(), scale.clone(), zp.clone()

    def export_weight(self) -> torch.Tensor:
        """The weight through torch's per-channel int8 fake-quant op (ONNX export: Q/DQ on a constant)."""
        if not self.enabled:
            return self.float_weights()[0]
        return torch.fake_quantize_per_channel_affine(self.export_w, self.export_scale, self.export_zp, 0, -128, 127)

    def forward(self, x):
        w = self.export_weight() if self.torch_ops else self.quantized_weight()
        bias = self.layer.bias if self.enabled else self.float_weights()[1]
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, bias)
        return F.linear(x, w, bias)


def _is_tensor_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in ADD_FUNCTIONS:
        return sum(isinstance(a, fx.Node) for a in node.args) == 2
    return node.op == "call_method" and node.target in ("add", "add_") and len(node.args) >= 2 and isinstance(node.args[1], fx.Node)


def _is_integer(node, modules: dict, depth: int = 0) -> bool:
    """Whether `node` is an integer tensor known from the graph alone: a non-float constant, or an add with one
    (index arithmetic an ONNX import carries, e.g. a gather's row numbers; never an activation to quantize)."""
    if not isinstance(node, fx.Node) or depth > 8:
        return False
    if node.op == "get_attr":
        parent, _, attr = node.target.rpartition(".")
        value = getattr(modules.get(parent), attr, None)
        return isinstance(value, torch.Tensor) and not value.is_floating_point()
    return _is_tensor_add(node) and any(_is_integer(a, modules, depth + 1) for a in node.args)


MATMULS = (torch.matmul, operator.matmul, torch.bmm)
SOFTMAXES = (torch.softmax, F.softmax)


def _is_act_matmul(node: fx.Node) -> bool:
    """A product of two activations (attention's q k^T and attn v), not a layer with weights."""
    if node.op != "call_function" or node.target not in MATMULS:
        return False
    ins = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    return len(ins) == 2 and all(a.op != "get_attr" for a in ins)


def _is_softmax(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.Softmax)
    return (node.op == "call_function" and node.target in SOFTMAXES) or (node.op == "call_method" and node.target == "softmax")


def _is_fused_act(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), FUSED_ACTIVATIONS)
    return node.op == "call_function" and node.target in FUSED_FUNCTIONS


def _is_unfused_act(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), UNFUSED_ACTIVATIONS)
    return node.op == "call_function" and node.target in UNFUSED_FUNCTIONS



def image_count(batches) -> int | None:
    """Images in a list of batches or a `Batches` sequence (without preprocessing them); None for an iterator."""
    if isinstance(getattr(batches, "count", None), int):
        return batches.count
    return sum(len(x) for x in batches) if isinstance(batches, (list, tuple)) else None

class QuantSim(nn.Module):
    """A quantization-simulated copy of `model` driven by `config`."""

    def __init__(self, model: nn.Module, config: QuantConfig | None = None):
        super().__init__()
        self.config = (config or QuantConfig()).resolved()
        model = copy.deepcopy(model).eval()
        try:
            gm = symbolic_trace(model)
        except Exception as exc:
            raise TraceError(
                f"{type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: {exc}); "
                "quantization simulation needs a traceable nn.Module"
            ) from None
        self.bn_of: dict[str, nn.BatchNorm2d] = {}  # conv name -> a copy of the BN folded into it
        self.folded_bn = fold_bn_in_graph(gm, self.bn_of) if self.config.fold_bn else []
        self.points: list[QuantPoint] = []
        self.weight_layers: dict[str, QuantWeightLayer] = {}
        self.unsupported: list[str] = []
        self.float_reasons: dict[str, str] = {}  # layers with weights that stay float, and why
        self.recovery_results: list = []  # what each of config.recovery's steps changed (quant.recovery.StepResult)
        self.bias_floors: dict[str, int] = {}  # layers whose weight scale was raised for an int32 bias (bias_range)
        # activation ranges a recovery step fitted (BRECQ's learned step sizes), by quantizer, with the scheme they
        # were fitted for: calibration keeps them (apply_ranges), so they are what the sim runs and exports
        self.learned_ranges: dict[str, tuple[RangeResult, QScheme]] = {}
        self._insert_quantizers(gm)
        if not self.weight_layers:
            raise NothingQuantized(
                f"{type(model).__name__} has no Conv2d or Linear layer the simulation can quantize, so every INT8 "
                "number would be the FP32 model's" + (f" (float: {', '.join(self.unsupported[:5])})" if self.unsupported else ""))
        self.model = gm
        self.stats: dict[str, TensorStats] = {}
        self._range_cache: dict[tuple, RangeResult] = {}
        self.configure(self.config)
        # An inference model until QAT says otherwise. nn.Module starts in training mode, and
        # torch.onnx.export restores the mode it found on every submodule: a sim left in training mode
        # came back from an ONNX export running its remaining BNs and dropouts in training mode.
        self.eval()

    # --- graph surgery ------------------------------------------------------------------------
    def _insert_quantizers(self, gm: fx.GraphModule) -> None:
        modules = dict(gm.named_modules())
        self.quantizers = nn.ModuleDict()
        gm.add_module("quantizers", self.quantizers)  # graph nodes call "quantizers.qN"
        used_names: set[str] = set()

        def add_point(after: fx.Node, name: str, kind: str, mtype: str) -> None:
            base, i = name, 1
            while name in used_names:
                i += 1
                name = f"{base}#{i}"
            used_names.add(name)
            key = f"q{len(self.points)}"
            self.quantizers[key] = ActQuantizer(name)
            with gm.graph.inserting_after(after):
                qnode = gm.graph.call_module(f"quantizers.{key}", (after,))
            after.replace_all_uses_with(qnode, delete_user_cb=lambda u: u is not qnode)
            self.points.append(QuantPoint(name, kind, mtype))

        for node in list(gm.graph.nodes):
            if node.op == "placeholder":
                add_point(node, "input", "input", "input")
            elif node.op == "call_module" and isinstance(modules.get(node.target), WEIGHT_LAYERS):
                layer = modules[node.target]
                wrapped = QuantWeightLayer(layer, node.target)
                self.weight_layers[node.target] = wrapped
                parent, _, attr = node.target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, attr, wrapped)
                users = list(node.users)
                after = users[0] if len(users) == 1 and _is_fused_act(users[0], modules) else node
                kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
                add_point(after, node.target, kind, type(layer).__name__)
            else:
                point = self._point_of(node, modules)
                if point is not None:
                    add_point(*point)
        self._record_float_layers(gm, modules)
        gm.graph.lint()
        gm.recompile()

    def _point_of(self, node: fx.Node, modules: dict) -> tuple | None:
        """(after, name, kind, type) of the quantizer a non-weight node needs, or None."""
        users = list(node.users)
        fused_after = users[0] if len(users) == 1 and _is_fused_act(users[0], modules) else node
        if _is_tensor_add(node) and not _is_integer(node, modules):
            return fused_after, node.name, "add", "add"
        if self.config.norm_outputs and node.op == "call_module" and isinstance(modules.get(node.target), nn.LayerNorm):
            return node, node.target, "norm", "LayerNorm"
        if self.config.attention and _is_act_matmul(node):
            return node, node.name, "matmul", "matmul"
        if self.config.attention and _is_softmax(node, modules):
            return node, node.target if node.op == "call_module" else node.name, "act", "Softmax"
        if _is_unfused_act(node, modules):
            mtype = type(modules[node.target]).__name__ if node.op == "call_module" else node.target.__name__
            return fused_after, node.target if node.op == "call_module" else node.name, "act", mtype  # fused: GELU10
        return None

    def _record_float_layers(self, gm: fx.GraphModule, modules: dict) -> None:
        """Layers with weights that stay float (LayerNorm, embeddings, functional calls), and why."""
        for name, mod in modules.items():
            if name and not list(mod.children()) and any(True for _ in mod.parameters(recurse=False)):
                if not isinstance(mod, (*WEIGHT_LAYERS, nn.BatchNorm2d)):
                    self.unsupported.append(f"{name} ({type(mod).__name__})")
                    quantized_out = isinstance(mod, nn.LayerNorm) and self.config.norm_outputs
                    self.float_reasons[name] = (f"{type(mod).__name__}: computes in float"
                                                + (" (its output is quantized)" if quantized_out else
                                                   "; no INT8 kernel in qcore"))
        for node in gm.graph.nodes:  # functional calls with weights (an aten op the loader did not lift)
            if node.op == "call_function" and any(a.op == "get_attr" for a in node.all_input_nodes):
                op = getattr(node.target, "__name__", str(node.target))
                self.unsupported.append(f"{node.name} ({op})")
                self.float_reasons[node.name] = f"{op} takes its weights as inputs (not a layer); runs in float"

    # --- configuration ------------------------------------------------------------------------
    def quantizer(self, name: str) -> ActQuantizer:
        for q in self.quantizers.values():
            if q.name == name:
                return q
        raise KeyError(f"no quantizer named {name!r}")

    def unsupported_note(self) -> str | None:
        """A sentence for reports when some layers have no quantizer and stay in float."""
        if not self.unsupported:
            return None
        return f"computed in float: {', '.join(self.unsupported)}"

    def layer_inventory(self) -> LayerInventory:
        """Which layers are quantized under the current config and which stay float, with the reason:
        every report carries this, so no FP32 number passes for an INT8 one."""
        quantized = tuple(n for n, w in self.weight_layers.items() if w.enabled)
        floats = [FloatLayer(n, f"{self.config.for_layer(n).weight_dtype} weights by the configuration")
                  for n, w in self.weight_layers.items() if not w.enabled]
        floats += [FloatLayer(n, r) for n, r in self.float_reasons.items()]
        if not quantized and not any(q.mode == Mode.QUANT for q in self.quantizers.values()):
            raise NothingQuantized("this configuration quantizes no layer and no activation: every number would be "
                                   "the FP32 model's")
        return LayerInventory(quantized, tuple(floats))

    def layer_names(self) -> list[str]:
        return [p.name for p in self.points]

    def configure(self, config: QuantConfig) -> None:
        """Apply a (new) config: weight quantizers now; activation ranges on the next apply_ranges.
        A weight range of "auto" is resolved for this CPU (`self.config` says which it became)."""
        config = config.resolved()
        self.config = config
        for name, wl in self.weight_layers.items():
            wl.configure(config.for_layer(name))
        if self.stats:
            self.apply_ranges()

    # --- calibration --------------------------------------------------------------------------
    @torch.no_grad()
    def collect_stats(self, batches: Iterable[torch.Tensor], progress: Progress | None = None) -> dict[str, TensorStats]:
        """One pass over the calibration batches, collecting statistics at every quantizer.

        Weights are quantized during the pass, as in deployment, so later layers see the
        activations the quantized model will produce from its own weights.
        """
        for q in self.quantizers.values():
            q.stats = TensorStats(q.name)
            q.mode = Mode.OBSERVE
        n, total = 0, image_count(batches)
        try:
            for x in batches:
                self.model(x)
                n += len(x)
                if progress:
                    progress(n / total if total else None,
                             Msg("statistics pass: {n}/{total} images", n=n, total=total or "?"))
        finally:
            for q in self.quantizers.values():
                q.mode = Mode.FLOAT
        if n == 0:
            raise ValueError("calibration needs at least one image")
        self.stats = {q.name: q.stats for q in self.quantizers.values()}
        self._range_cache = {}
        return self.stats

    def apply_ranges(self, method: str | None = None, ranges: dict[str, RangeResult] | None = None) -> dict[str, RangeResult]:
        """Set every activation quantizer's range and switch to quantized mode.

        By default each layer uses its config's act_method, or the range a recovery step fitted for it
        (`learned_ranges`, for the same scheme); `method` overrides both for all layers, `ranges` supplies
        precomputed ranges by name. A layer whose config fixes its range (`act_clip`) gets that range whatever
        `method` or `ranges` say. Layers configured as float stay float.
        """
        if not self.stats:
            raise RuntimeError("collect_stats() must run before ranges can be applied")
        applied = {}
        for q in self.quantizers.values():
            cfg = self.config.for_layer(q.name)
            if not cfg.quantizes_act:
                q.set_range(None, None, "fp32")
                q.mode = Mode.FLOAT
                continue
            q.mode = Mode.QUANT
            if cfg.act_dtype != "int":
                q.set_range(None, None, cfg.act_dtype)
                continue
            scheme = cfg.act_scheme(self.config.reduce_range)
            learned, learned_scheme = self.learned_ranges.get(q.name, (None, None)) if method is None else (None, None)
            if cfg.act_clip is not None:  # a fixed range in the config beats any method and any precomputed range
                result = fixed_range(self.stats[q.name], *cfg.act_clip, scheme)
            elif ranges is not None and q.name in ranges:
                result = ranges[q.name]
            elif learned is not None and learned_scheme == scheme:
                result = learned
            else:
                key = (q.name, method or cfg.act_method, scheme)
                if key not in self._range_cache:  # entropy/mse searches are worth computing once
                    self._range_cache[key] = compute_range(self.stats[q.name], key[1], scheme)
                result = self._range_cache[key]
            q.set_range(result, scheme, "int", exact=result is learned)
            applied[q.name] = result
        self.fit_int32_biases()
        return applied

    def fit_int32_biases(self) -> dict[str, int]:
        """Weight-scale floors that keep each conv's int32 bias in range for its input's current grid
        (quant.bias_range); the layers and channel counts it raised."""
        from qcore.quant.bias_range import fit_int32_biases

        self.bias_floors = fit_int32_biases(self)
        return self.bias_floors

    def weights_changed(self) -> None:
        """Forget cached quantized weights: call after an optimizer step changed the float weights."""
        for w in self.weight_layers.values():
            w.forget_quantized()

    def int_quantizers(self) -> list[ActQuantizer]:
        """The activation quantizers that quantize to integers under the current config."""
        return [q for q in self.quantizers.values() if q.quantizes_int]

    def wrap_weight_layer(self, name: str, wrapper: nn.Module) -> None:
        """Put `wrapper` (which holds the layer) where the graph calls weight layer `name`."""
        parent, _, attr = name.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, attr, wrapper)

    def unwrap_weight_layer(self, name: str) -> None:
        """The graph calls the weight layer itself again."""
        self.wrap_weight_layer(name, self.weight_layers[name])

    def wrapper_of(self, name: str) -> nn.Module:
        """What the graph calls for weight layer `name`: the layer, or a wrapper around it."""
        return self.model.get_submodule(name)

    def keep_current_weights(self) -> None:
        """Every layer's own weights are the model from here on (see QuantWeightLayer.keep_current_weights)."""
        for w in self.weight_layers.values():
            w.keep_current_weights()

    def disabled(self):
        """Run the graph in float (folded BN, no quantizers, every layer's original weights): the FP32 model."""
        return self.only(set(), set())

    @contextmanager
    def only(self, weights: set[str] | None = None, acts: set[str] | None = None):
        """Inside, only the weight layers in `weights` and the activation quantizers in `acts` (None: all of them)
        that the config quantizes stay on; every other quantizer passes values through. Ranges stay as calibrated
        (the weights-only / activations-only split of a diagnosis; nothing on: `disabled`)."""
        modes = {k: q.mode for k, q in self.quantizers.items()}
        enabled = {k: w.enabled for k, w in self.weight_layers.items()}
        try:
            for q in self.quantizers.values():
                q.mode = q.mode if acts is None or q.name in acts else Mode.FLOAT
            for k, w in self.weight_layers.items():
                w.enabled = enabled[k] and (weights is None or k in weights)
            yield self
        finally:
            for k, q in self.quantizers.items():
                q.mode = modes[k]
            for k, w in self.weight_layers.items():
                w.enabled = enabled[k]

    @contextmanager
    def capture(self, names: Iterable[str] | None = None):
        """Record (name, input, output) at every quantizer (or only those in `names`) during the
        forward passes inside."""
        records: list = []
        wanted = None if names is None else set(names)
        chosen = [q for q in self.quantizers.values() if wanted is None or q.name in wanted]
        for q in chosen:
            q.capture = records
        try:
            yield records
        finally:
            for q in chosen:
                q.capture = None

    @contextmanager
    def torch_fake_quant(self, activations: str = "u8"):
        """Run every quantizer through torch's own fake-quant ops, bit-exact with ours, so that
        torch.onnx.export writes QuantizeLinear/DequantizeLinear pairs with exactly these ranges.
        `activations` is "u8" or "s8" (the same grid stored as int8)."""
        for q in self.quantizers.values():
            if q.quantizes_int and q.scheme.bits != 8:
                raise ValueError(f"{q.name}: {q.scheme.bits}-bit activations have no INT8 kernel; use 8 bits or float")
        self.fit_int32_biases()  # the grids as they are now (QAT may have moved them since calibration)
        try:
            for q in self.quantizers.values():
                q.torch_ops = activations
            for w in self.weight_layers.values():
                w.begin_export()
            yield self
        finally:
            for q in self.quantizers.values():
                q.torch_ops = None
            for w in self.weight_layers.values():
                w.end_export()

    def forward(self, x):
        return self.model(x)

"""The argument parser: the same option names and meanings on every command (see qcore.cli.options)."""

from __future__ import annotations

import argparse
import sys

from qcore.cli.basics import cmd_bench, cmd_evaluate, cmd_history, cmd_models, cmd_train
from qcore.cli.graph import GRAPH_METRICS, cmd_graph
from qcore.cli.diagnose import cmd_diagnose
from qcore.cli.language import _
from qcore.cli.options import torch_threads
from qcore.cli.ptq import cmd_calibrate, cmd_deploy, cmd_recover, cmd_sensitivity
from qcore.cli.training import cmd_qat, cmd_workflow
from qcore.cli.whatif import cmd_whatif
from qcore.i18n import LANGUAGES
from qcore.quant.calibration import DEFAULT_METHODS
from qcore.quant.qconfig import WEIGHT_RANGES
from qcore.store.history import KINDS
from qcore.zoo.preprocess import PRESETS

__all__ = ["build_parser"]


class _DeprecatedBits(argparse.Action):
    """--bits, the old name of --act-bits on `calibrate`: still works, and says so on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(_("warning: --bits is deprecated; use --act-bits (the same activation bits)"), file=sys.stderr)
        setattr(namespace, self.dest, values)


def _quant_flags(sp, weight_bits: int = 8, bits_alias: bool = True) -> None:
    """The quantization options every command that quantizes takes, with the same names and meanings. Their
    defaults are None so that `_quant_config` can tell a flag given from one left alone (and warn when --config
    overrides one); the command's own defaults go to `quant_defaults`."""
    g = sp.add_argument_group(_("quantization (the same on every command that quantizes)"))
    g.add_argument("--config", default=None, metavar="FILE",
                   help=_("a QuantConfig JSON file; it overrides the bit options below (default: W{w}A8 per-channel, "
                          "max)").format(w=weight_bits))
    g.add_argument("--weight-bits", type=int, default=None, metavar="N", help=_("weight bits, 2 to 8 (default: {n})").format(n=weight_bits))
    g.add_argument("--act-bits", type=int, default=None, metavar="N", help=_("activation bits, 2 to 16 (default: 8)"))
    if bits_alias:  # `whatif` gives --bits to the edited layer
        g.add_argument("--bits", dest="act_bits", type=int, action=_DeprecatedBits, metavar="N", help=_("deprecated: the old name of --act-bits"))
    g.add_argument("--granularity", dest="weight_granularity", default=None, choices=["tensor", "channel"],
                   help=_("weight scales per tensor or per output channel (default: channel)"))
    side = g.add_mutually_exclusive_group()
    side.add_argument("--symmetric", dest="act_symmetric", action="store_const", const=True, default=None,
                      help=_("activations on a symmetric grid around zero"))
    side.add_argument("--asymmetric", dest="act_symmetric", action="store_const", const=False,
                      help=_("activations on an asymmetric grid from their minimum (the default; weights are always "
                             "symmetric)"))
    g.add_argument("--method", dest="act_method", default=None, metavar="METHOD",
                   help=_("activation calibration method: max, percentile:P, entropy or mse (default: max)"))
    g.add_argument("--weight-range", choices=list(WEIGHT_RANGES), default=None,
                   help=_("weights in 8 bits (full), 7 bits (reduced: exact on CPUs without VNNI), or chosen for "
                          "this CPU (auto, the default)"))
    sp.set_defaults(quant_defaults={"weight_bits": weight_bits})


def _common(sp) -> None:
    from qcore.zoo.models import DEFAULT_MODEL

    sp.add_argument("--model", default=DEFAULT_MODEL,
                    help=_("a registered name (python -m qcore models) or your model file: .pt2, .onnx, or a state_dict "
                         "(.pt/.pth/.safetensors, with --arch)"))
    sp.add_argument("--weights", default=None, help=_("a local weights file for a registered model"))
    own = sp.add_argument_group(_("your own model file (--model PATH)"))
    own.add_argument("--arch", default=None, help=_("a state_dict's architecture: a registered name or timm:NAME"))
    own.add_argument("--input-shape", default=None, help=_("C,H,W, e.g. 3,224,224 (.pt2 and .onnx files; read from the file when it fixes them)"))
    own.add_argument("--preprocess", default=None, choices=list(PRESETS),
                     help=_("imagenet (resize 256, crop 224, ImageNet mean/std), tf (mean=std=0.5), timm (the "
                          "architecture's config), custom (--mean/--std/--resize/--crop)"))
    own.add_argument("--mean", default=None, help=_("per-channel mean, e.g. 0.485,0.456,0.406"))
    own.add_argument("--std", default=None, help=_("per-channel std, e.g. 0.229,0.224,0.225"))
    own.add_argument("--resize", type=int, default=None, help=_("short side images are resized to before the crop"))
    own.add_argument("--crop", type=int, default=None, help=_("centre crop (the model's input size)"))
    own.add_argument("--interpolation", default=None, choices=["bilinear", "bicubic", "nearest"])
    sp.add_argument("--data", default=None, help=_("fashion-mnist, cifar10 or imagefolder:PATH"))
    sp.add_argument("--eval-size", type=int, default=None, help=_("evaluation images (default: all)"))
    sp.add_argument("--seed", type=int, default=0)


def _add_basics(sub) -> None:
    """models, train, evaluate, history, bench."""
    sub.add_parser("models", help=_("list the registered models")).set_defaults(fn=cmd_models)
    t = sub.add_parser("train", help=_("train a built-in model and write its checkpoint"))
    t.add_argument("name")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out-dir", default="assets")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("evaluate", help=_("FP32 accuracy of a model"))
    _common(e)
    e.set_defaults(fn=cmd_evaluate)
    h = sub.add_parser("history", help=_("stored runs: list, compare, delete, export"))
    h.add_argument("--kind", choices=KINDS, default=None)
    h.add_argument("--model", default=None, help=_("model name contains this"))
    h.add_argument("--compare", default=None, help=_("run ids side by side, e.g. 3,7"))
    h.add_argument("--delete", default=None, help=_("run ids to delete, e.g. 3,7"))
    h.add_argument("--export", choices=["csv", "json"], default=None)
    h.add_argument("--out", default=None)
    h.set_defaults(fn=cmd_history)
    b = sub.add_parser("bench", help=_("benchmarks that write JSON (python -m qcore bench calibrate|latency ...)"),
                       add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=cmd_bench)


def _add_ptq(sub) -> None:
    """calibrate, deploy, sensitivity."""
    c = sub.add_parser("calibrate", help=_("one statistics pass, then accuracy per calibration method"))
    _common(c)
    _quant_flags(c)
    c.add_argument("--methods", default=None,
                   help=_("methods to compare, comma-separated (default: {methods}); --method M compares one").format(
                       methods=",".join(DEFAULT_METHODS)))
    c.add_argument("--calib-size", type=int, default=512)
    c.add_argument("--out", default=None)
    c.set_defaults(fn=cmd_calibrate, eval_size=None)
    d = sub.add_parser("deploy", help=_("real INT8 models from a config: accuracy, agreement, latency, files"))
    _common(d)
    _quant_flags(d)
    d.add_argument("--backend", default="auto", choices=["auto", "x86", "ort"])
    d.add_argument("--calib-size", type=int, default=512)
    d.add_argument("--batch", type=int, default=32, help=_("the larger batch timed besides batch 1"))
    d.add_argument("--threads", type=int, default=torch_threads())
    d.add_argument("--iters", type=int, default=30)
    d.add_argument("--out", required=True, help=_("output directory"))
    d.set_defaults(fn=cmd_deploy)
    sn = sub.add_parser("sensitivity", help=_("per-layer two-sided sensitivity sweep (and greedy float fallback)"))
    _common(sn)
    _quant_flags(sn)
    sn.add_argument("--calib-size", type=int, default=512)
    sn.add_argument("--budget", type=float, default=None, help=_("accuracy drop allowed vs FP32, e.g. 0.01"))
    sn.add_argument("--layers", default=None, metavar="NAMES",
                    help=_("sweep only these layers (comma-separated names); each is still measured against all "
                           "the others quantized or float"))
    sn.add_argument("--max-layers", type=int, default=None, metavar="N",
                    help=_("sweep only the first N layers in graph order (a quick look at a large model)"))
    sn.add_argument("--executor", default="local",
                    help=_("local (this process), ray (a local Ray instance, or $RAY_ADDRESS), or a cluster: "
                           "ray://HOST:PORT"))
    sn.add_argument("--workers", type=int, default=None, help=_("CPUs of the local Ray instance (default: all)"))
    sn.add_argument("--out", required=True)
    sn.set_defaults(fn=cmd_sensitivity, eval_size=1000)


def _add_recover(sub) -> None:
    r = sub.add_parser("recover", help=_("accuracy recovery: CLE, bias correction, AdaRound, GPTQ, BRECQ, SmoothQuant vs plain PTQ"))
    _common(r)
    _quant_flags(r)
    r.add_argument("--steps", required=True,
                   help=_("in order, e.g. cle,bias_correction,adaround:iters=500 (settings: adaround iters/reg, "
                        "gptq damp, brecq iters/reg/drop/lr, smoothquant alpha, cle high_bias=0|1; ';' between settings)"))
    r.add_argument("--separately", action="store_true", help=_("each step alone (then all), instead of adding them in turn"))
    r.add_argument("--calib-size", type=int, default=512)
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_recover, eval_size=2000)


def _add_diagnose(sub) -> None:
    dg = sub.add_parser("diagnose", help=_("which layers cause the accuracy drop, why, and which config change fixes it"))
    _common(dg)
    _quant_flags(dg)
    dg.add_argument("--calib-size", type=int, default=512)
    dg.add_argument("--apply-best", action="store_true",
                    help=_("apply the top-ranked fix and measure the accuracy before and after"))
    dg.add_argument("--out", required=True, help=_("the JSON report (with --apply-best, the fix's result beside it)"))
    dg.set_defaults(fn=cmd_diagnose, eval_size=1000)


def _add_qat(sub) -> None:
    q = sub.add_parser("qat", help=_("quantization-aware fine-tune: PTQ vs QAT vs real INT8"))
    _common(q)
    _quant_flags(q, weight_bits=4)
    budget = q.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help=_("fine-tune time budget (default 2)"))
    budget.add_argument("--steps", type=int, default=None)
    q.add_argument("--epochs", type=int, default=3, help=_("evaluation rounds the run is split into"))
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--lr", type=float, default=None, help=_("default: 1%% of the model's training rate"))
    q.add_argument("--range-mode", default="fixed", choices=["fixed", "observe", "learn"])
    q.add_argument("--freeze-after", type=int, default=50, help=_("observe mode: steps before ranges freeze"))
    q.add_argument("--bn-freeze-after", type=int, default=0,
                   help=_("steps during which BN statistics train before folding and freezing (0: folded from the start)"))
    q.add_argument("--calib-size", type=int, default=512)
    q.add_argument("--monitor-size", type=int, default=2000, help=_("test images scored after every epoch"))
    q.add_argument("--nproc", type=int, default=1,
                   help=_("processes for DistributedDataParallel (gloo on CPUs, NCCL on GPUs); or run under torchrun"))
    q.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help=_("where training steps run (auto: a CUDA GPU when there is one)"))
    q.add_argument("--out", required=True, help=_("the JSON report; model files go to a folder of the same name"))
    q.set_defaults(fn=cmd_qat)


def _add_workflow(sub) -> None:
    w = sub.add_parser("workflow", help=_("guided PTQ -> recovery -> partial quantization -> QAT to a target, ending in real "
                                          "INT8 and a Markdown/HTML report (exit code 1: target not met)"))
    _common(w)
    _quant_flags(w)
    w.add_argument("--max-drop", type=float, default=1.0,
                   help=_("accuracy target: at most this many points below FP32 (default 1)"))
    w.add_argument("--min-speedup", type=float, default=None,
                   help=_("speed target: real INT8 at least this many times faster than FP32 at batch 1"))
    w.add_argument("--no-recovery", action="store_true",
                   help=_("skip step 2 (CLE, bias correction, AdaRound/GPTQ, SmoothQuant: whichever fit the model)"))
    w.add_argument("--max-float", type=int, default=5, help=_("most layers step 3 may keep in float"))
    w.add_argument("--no-qat", action="store_true", help=_("stop after step 3"))
    w.add_argument("--qat-share", type=float, default=10.0,
                   help=_("QAT steps as a share of the original training schedule, in %% (at most 10)"))
    w.add_argument("--calib-size", type=int, default=512)
    w.add_argument("--out", required=True, help=_("folder for report.md, report.html, report.json and the INT8 files"))
    w.set_defaults(fn=cmd_workflow, eval_size=1000)


def _add_graph(sub) -> None:
    g = sub.add_parser("graph", help=_("the model's data-flow graph, nodes coloured by a measured metric, as HTML "
                                       "(and JSON)"))
    _common(g)
    _quant_flags(g)
    g.add_argument("--metric", default="sqnr", choices=GRAPH_METRICS, help=_("what colours the nodes (default: sqnr)"))
    g.add_argument("--calib-size", type=int, default=64,
                   help=_("calibration images (default: 64); SQNR and ranges on the first 16 of them"))
    g.add_argument("--sensitivity", default=None, metavar="FILE",
                   help=_("a sensitivity report (python -m qcore sensitivity --out FILE) for --metric sensitivity"))
    g.add_argument("--max-nodes", type=int, default=60,
                   help=_("collapse blocks (by module path) until at most this many nodes are drawn; 0: never"))
    g.add_argument("--expand", default=None, metavar="BLOCK,...", help=_("blocks to draw node by node, e.g. layers.2"))
    g.add_argument("--out", required=True, help=_("the HTML file (opens offline)"))
    g.add_argument("--json", default=None, metavar="FILE", help=_("also write the graph and its numbers as JSON"))
    g.set_defaults(fn=cmd_graph)


def _add_whatif(sub) -> None:
    w = sub.add_parser("whatif", help=_("edit one layer (clip range, bits, granularity, float) and print its SQNR and "
                                        "the accuracy before and after"))
    _common(w)
    _quant_flags(w, bits_alias=False)
    e = w.add_argument_group(_("the edited layer"))
    e.add_argument("--layer", required=True, help=_("the layer's name (as the Calibration page and calibrate list them)"))
    e.add_argument("--clip", default=None, metavar="LO,HI", help=_("a fixed clip range for the layer's output"))
    e.add_argument("--bits", dest="layer_bits", type=int, default=None, metavar="B",
                   help=_("the layer's weight and activation bits"))
    e.add_argument("--layer-weight-bits", type=int, default=None, metavar="B", help=_("the layer's weight bits only"))
    e.add_argument("--layer-act-bits", type=int, default=None, metavar="B", help=_("the layer's activation bits only"))
    e.add_argument("--layer-granularity", default=None, choices=["tensor", "channel"],
                   help=_("the layer's weight scales per tensor or per output channel"))
    side = e.add_mutually_exclusive_group()
    side.add_argument("--layer-symmetric", dest="layer_symmetric", action="store_const", const=True, default=None,
                      help=_("the layer's activations on a symmetric grid"))
    side.add_argument("--layer-asymmetric", dest="layer_symmetric", action="store_const", const=False,
                      help=_("the layer's activations on an asymmetric grid"))
    e.add_argument("--float", action="store_true", help=_("keep the layer in float"))
    w.add_argument("--calib-size", type=int, default=512)
    w.add_argument("--out", default=None, help=_("JSON with the results before and after, and the edited config"))
    w.set_defaults(fn=cmd_whatif, eval_size=1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qcore", description=_("Quantization Explorer engine"))
    p.add_argument("--lang", choices=LANGUAGES, default=None,
                   help=_("language of messages and help: en or ko (default: $QX_LANG, else the locale)"))
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_basics(sub)
    _add_ptq(sub)
    _add_recover(sub)
    _add_diagnose(sub)
    _add_qat(sub)
    _add_workflow(sub)
    _add_graph(sub)
    _add_whatif(sub)
    return p

"""Why is INT8 not faster? Reasons a user can act on, derived from measurements and the graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qcore.runtime.reports import DeployReport

__all__ = ["diagnose"]


def diagnose(report: "DeployReport") -> list[str]:
    """Plain-language findings for a deploy/bench report (empty when INT8 is clearly faster).

    Looks at: the CPU's INT8 instructions, the model's arithmetic per image, the batch size, the
    quantize/dequantize transitions and float ops left in the INT8 graph, S8S8 activations on
    x86, and reduce_range.
    """
    findings: list[str] = []
    cpu = report.machine
    best = report.best_int8
    by_batch = report.latency_ms
    speedups = report.speedup_vs_fastest_fp32_by_batch
    b1 = speedups.get("1")
    if not cpu.get("avx512") and not cpu.get("avx2"):
        findings.append("This CPU has neither AVX2 nor AVX-512: INT8 kernels fall back to slow reference code.")
    elif not cpu.get("vnni"):
        findings.append(
            "This CPU has no VNNI: each INT8 multiply-accumulate takes three instructions instead of one, so "
            "INT8 gains are small."
        )
    findings += agreement_findings(report)
    macs = report.macs
    if b1 is not None and b1 < 1.2:
        if macs and macs < 30e6:
            findings.append(
                f"The model does only {macs / 1e6:.1f} M multiply-accumulates per image: at batch 1 the time goes to "
                "per-operator overhead (quantize/dequantize, dispatch), not arithmetic. INT8 pays off at larger batches "
                "or on larger models."
            )
        big = [b for b, s in speedups.items() if b != "1" and s >= 1.2]
        if big:
            findings.append(f"At batch {', '.join(big)} INT8 is faster: batch your requests if latency allows.")
    by_path = report.speedup_by_path
    for name, info in report.int8_paths.items():
        if by_path.get(name, 0.0) >= 1.2:
            continue  # this path is fast: nothing to explain
        transitions = info.transitions
        float_ops = info.float_ops
        if transitions > 6:
            findings.append(
                f"{name}: {transitions} quantize/dequantize ops stay in the graph (float layers from partial "
                "quantization, or ops without an INT8 kernel such as GELU/SiLU); each costs a pass over the tensor. "
                "Keep float layers adjacent, or quantize them."
            )
        if float_ops:
            findings.append(f"{name} still runs in float: {', '.join(float_ops[:6])}.")
    s8 = by_path.get("ort_s8s8")
    u8 = by_path.get("ort_u8s8")
    if s8 is not None and u8 is not None and s8 < 0.8 * u8:
        findings.append(
            f"ONNX Runtime S8S8 (int8 activations) runs at {s8:.2f}x vs {u8:.2f}x for U8S8: x86 INT8 kernels "
            "want uint8 activations; use U8S8."
        )
    if report.config.get("reduce_range") and cpu.get("vnni"):
        findings.append("reduce_range is on, but this CPU has VNNI: it only costs accuracy here; turn it off.")
    if by_batch and best and b1 is not None and b1 >= 1.2 and not findings:
        findings.append(f"INT8 ({best}) is {b1:.2f}x faster than the fastest FP32 path at batch 1.")
    return findings


AGREEMENT_GOAL = 0.99


def agreement_findings(report: "DeployReport") -> list[str]:
    """Why a real INT8 model computes something other than the simulation: which paths disagree,
    the first layer whose INT8 output departs (the per-layer check), and whether this CPU's int16
    saturation explains it."""
    low = {n: s.agreement_with_simulation for n, s in report.paths.items()
           if n in report.int8_paths and s.agreement_with_simulation < AGREEMENT_GOAL}
    check = report.layer_check or {}
    first = check.get("first_divergent")
    if not low and not first:
        return []
    out = []
    if low:
        out.append("Real INT8 computes something other than the simulation: top-1 agreement "
                   + ", ".join(f"{n} {a:.1%}" for n, a in low.items()) + f" (goal {AGREEMENT_GOAL:.0%}).")
    if first:
        layer = next(x for x in check["layers"] if x["name"] == first)
        out.append(f"{check['path']} first departs from the simulation at {first}: {layer['off_fraction']:.1%} of its "
                   f"values are more than one step off (up to {layer['max_steps']} steps), on {check['images']} images.")
    out += isolated_findings(check.get("isolated"), report.machine, report.config.get("weight_range"))
    cpu, weights = report.machine, report.config.get("weight_range")
    if not cpu.get("vnni") and weights == "full":
        out.append("This CPU has no VNNI: its INT8 kernels add pairs of u8 x s8 products in a saturating int16, which "
                   "8-bit weights overflow. Use 7-bit weights (--weight-range reduced, or auto, the default here), "
                   "which the simulation then uses too.")
    elif cpu.get("vnni"):
        out.append("This CPU has VNNI (int32 accumulation), so int16 saturation is not the cause: look at that layer's "
                   "operator and its ranges.")
    return out


def isolated_findings(isolated: dict | None, cpu: dict, weights: str | None) -> list[str]:
    """What the isolated per-op check (runtime.isolated_check: each quantized op fed the simulation's own
    integers) says: which op computes something else and why, or that none does and the end-to-end
    departure is one-step rounding compounding through depth."""
    if not isolated or "departing" not in isolated:
        return []
    bad = isolated["departing"]
    if not bad:
        return [f"Each of the {isolated['ops']} quantized ops, fed the simulation's own integers, is within one step of "
                "it: no op computes something else; differences come from one-step rounding compounding through depth."]
    return [_why(op, cpu, weights) for op in bad[:3]]


def _why(op: dict, cpu: dict, weights: str | None) -> str:
    head = (f"{op['name']} ({'+'.join(op['kernels']) or 'no kernel'}) departs on its own, fed the simulation's integers: "
            f"{op['off_fraction']:.1%} of its values off by up to {op['max_steps']} steps. ")
    conv = any(k in ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat") for k in op["kernels"])
    if conv and not cpu.get("vnni") and weights == "full":
        return head + "Cause: int16 saturation of u8 x s8 pairs on this CPU without VNNI; 7-bit weights make it exact."
    if conv and op["max_steps"] > 32 and op["off_fraction"] < 0.5:
        return head + ("Whole channels off look like an int32 bias overflow (a channel with ~0 weights and a real bias); "
                       "the simulation floors such weight scales, so this model was exported without that floor.")
    if not op.get("int8", True):
        return head + "ONNX Runtime runs this op in float here: float rounding should keep it within a step, so its "\
                      "float function differs from the simulation's; this op cannot be made exact by the ranges."
    return head + "This INT8 kernel rounds or clamps differently from the simulation; it cannot be made exact from the " \
                  "simulation's side: keep the layer in float (partial quantization) if it costs accuracy."

"""The workflow's last stage: the chosen model as real INT8, measured against FP32 on this CPU.

After steps 1 or 2 the configuration is deployed (qcore.runtime.deploy: every INT8 backend built and
timed, the fastest one kept, its file exported); after QAT the fine-tuned model's own INT8 export,
already built, scored and timed inside the QAT run, is the result (deploying the configuration again
would calibrate afresh and lose the fine-tuned weights).
"""

from __future__ import annotations

from pathlib import Path

from qcore.analysis.sensitivity import Prepared
from qcore.quant.progress import Progress
from qcore.quant.qconfig import QuantConfig
from qcore.runtime.deploy import deploy
from qcore.workflow.report import FinalInt8, StepOutcome
from qcore.workflow.target import Target

__all__ = ["deployed", "from_qat"]


def deployed(p: Prepared, config: QuantConfig, source: str, target: Target, out_dir: Path, threads: int,
             say: Progress) -> FinalInt8:
    """Deploy `config` on the workflow's images; batch-1 speed against the fastest FP32 runtime."""
    inp = p.inputs
    report = deploy(inp.loaded, config, out_dir=out_dir, data=inp.data, calib_size=inp.calib_size,
                    eval_size=inp.eval_size, seed=inp.seed, batch_sizes=(1,), threads=threads,
                    secondary_images=min(500, inp.eval_size), progress=say)
    best = report.best_int8
    timing = report.latency_ms["batch_1"]
    verdict = (target.judge(report.int8_accuracy, report.fp32_accuracy, report.speedup_vs_fastest_fp32)
               if report.int8_accuracy is not None else None)
    return FinalInt8(source, report.int8_accuracy, report.simulation_accuracy,
                     timing[best]["median_ms"] if best else None, timing[report.fastest_fp32]["median_ms"],
                     report.speedup_vs_fastest_fp32, report.fastest_fp32, best or "none", verdict,
                     files=[str(Path(out_dir) / f) for f in report.files], notes=list(report.notes))


def from_qat(step: StepOutcome, fp32_accuracy: float, target: Target) -> FinalInt8:
    """The QAT run's INT8 export, scored and timed (ONNX Runtime U8S8 vs ONNX Runtime FP32) in that run."""
    d = step.detail
    acc = d.int8_accuracy
    verdict = target.judge(acc, fp32_accuracy, step.speedup) if acc is not None else None
    notes = list(d.notes)
    if acc is None:
        notes.append("no real INT8 model could be built for this configuration (see the notes): the "
                     "accuracy above is the fake-quant simulation's")
    return FinalInt8("qat", acc, step.accuracy, step.int8_ms, step.fp32_ms, step.speedup, "ort", "ort_u8s8",
                     verdict, files=[f for f in d.files if f.endswith(".onnx")], notes=notes)

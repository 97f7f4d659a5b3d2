"""The commands that train: qat, and the guided workflow that may end in QAT."""

from __future__ import annotations

from pathlib import Path

from qcore.cli.language import _, console_progress
from qcore.cli.options import model_arg, quant_config
from qcore.cli.output import pct, remember_run, write_report

__all__ = ["cmd_qat", "cmd_workflow"]


def cmd_qat(args) -> int:
    from qcore.train.qat import QATRecipe, run_qat

    config = quant_config(args)
    recipe = QATRecipe(steps=args.steps, minutes=None if args.steps is not None else (args.minutes or 2.0), epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, range_mode=args.range_mode, freeze_after=args.freeze_after,
                       bn_freeze_after=args.bn_freeze_after)
    out = Path(args.out)
    files_dir = out.with_suffix("")
    progress = console_progress()

    def on_metric(row):
        if row.kind == "epoch":
            int8 = _(", INT8 {acc} at {ms} ms").format(acc=pct(row.int8_accuracy), ms=f"{row.int8_latency_ms:.3f}") \
                if row.int8_latency_ms is not None else ""
            progress.line(_("epoch {epoch} (step {step}): fake-quant {acc}").format(
                epoch=row.epoch, step=row.step, acc=pct(row.fake_quant_accuracy)) + int8)

    from qcore.train.ddp import from_environment

    ranks = from_environment()  # under torchrun: this process's rank
    result = run_qat(model_arg(args), config, recipe, args.data, args.calib_size,
                     args.monitor_size, args.eval_size, args.seed, files_dir,
                     progress=progress, on_metric=on_metric, nproc=args.nproc, device=args.device, ranks=ranks)
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    report = result.report
    progress.end()
    if report.distributed["world"] > 1:
        print(_("DDP on {n} processes ({backend}, {device})").format(
            n=report.distributed["world"], backend=report.distributed["backend"], device=report.distributed["device"]))
    print(_("{model} ({n} test images): FP32 {fp32}, PTQ {ptq}, QAT {qat}, QAT INT8 {int8}").format(
        model=report.identity.model, n=report.eval_images, fp32=pct(report.fp32_accuracy), ptq=pct(report.ptq_accuracy),
        qat=pct(report.qat_accuracy), int8=pct(report.int8_accuracy)))
    print(_("fine-tune {steps} steps in {seconds} s on {device}; a fake-quant step costs {x}x a FP32 step there").format(
        steps=report.steps, seconds=f"{report.seconds:.1f}", device=report.distributed["device"],
        x=f"{report.step_overhead_vs_fp32:.2f}"))
    write_report(out, report, quiet=True)
    print(_("wrote {out} and {files} in {folder}").format(out=out, files=", ".join(report.files), folder=files_dir))
    remember_run(report)
    return 0


def _workflow_figures(report, tr) -> list:
    """The charts of the workflow's HTML report (the same builders the Workflow page draws with)."""
    from qcore.figures import float_layers_curve_figure, workflow_steps_figure
    from qcore.workflow.document import title

    ran = [{"label": title(s.step, tr), "accuracy": s.accuracy, "met": s.met} for s in report.steps if s.ran]
    drop = report.target.get("max_drop")
    figs = [(tr("Accuracy after each step"), workflow_steps_figure(
        ran, report.fp32_accuracy, None if drop is None else report.fp32_accuracy - drop))]
    if report.step("partial").ran:
        figs.append((tr("Step 3: layers kept in float"),
                     float_layers_curve_figure(report.step("partial").detail.curve, report.fp32_accuracy)))
    return figs


def cmd_workflow(args) -> int:
    from qcore.workflow import Target, WorkflowOptions, run_workflow
    from qcore.workflow.document import summary_rows, to_html, to_markdown

    target = Target(max_drop=None if args.max_drop is None else args.max_drop / 100, min_speedup=args.min_speedup)
    config = quant_config(args)
    options = WorkflowOptions(max_float=args.max_float, allow_qat=not args.no_qat, qat_fraction=args.qat_share / 100,
                              allow_recovery=not args.no_recovery)
    out = Path(args.out)
    report = run_workflow(model_arg(args), target, config, options, args.data, args.calib_size, args.eval_size, args.seed,
                          out, progress=(progress := console_progress()))
    progress.end()
    for row in summary_rows(report, _):
        print("  ".join(row))
    (out / "report.md").write_text(to_markdown(report, _))
    (out / "report.html").write_text(to_html(report, _, _workflow_figures(report, _)))
    write_report(out / "report.json", report, quiet=True)
    print(_("wrote {files} in {folder}").format(files="report.md, report.html, report.json", folder=out))
    remember_run(report)
    return 0 if report.met_by else 1

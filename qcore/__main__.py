"""Command line: everything the app can do, `python -m qcore ...` can do.

    python -m qcore models
    python -m qcore train NAME [--epochs N] [--seed S] [--out-dir DIR]
    python -m qcore evaluate [--model NAME] [--data NAME] [--eval-size N]
    python -m qcore calibrate [--model NAME] [--data NAME] [--methods max,percentile:99.99,entropy,mse]
                              [--calib-size N] [--eval-size N] [--out FILE.json]
    python -m qcore deploy [--model NAME] [--backend auto|x86|ort] --out DIR
    python -m qcore sensitivity [--model NAME] [--eval-size N] [--budget 0.01] [--executor local|ray|ray://HOST:PORT]
                                [--workers N] --out FILE.json
    python -m qcore history [--kind K] [--model M] [--compare ID,ID] [--delete ID,ID] [--export csv|json --out F]
    python -m qcore recover [--model NAME] --steps cle,bias_correction,adaround --out FILE.json
    python -m qcore qat [--model NAME] [--minutes M | --steps N]
                        [--range-mode fixed|observe|learn] [--nproc N] [--device auto|cpu|cuda] --out FILE.json
    torchrun --nproc-per-node N -m qcore qat ... (multi-node: torchrun --nnodes, --node-rank, --rdzv-endpoint)
    python -m qcore workflow [--model NAME] [--max-drop 1.0] [--min-speedup 2]
                             [--max-float 5] [--no-qat] [--qat-share 10] --out DIR   (exit 1: target not met)

Every command that quantizes (calibrate, deploy, sensitivity, recover, qat, workflow) takes the same options:
    [--weight-bits 8 (qat: 4)] [--act-bits 8] [--granularity channel|tensor] [--symmetric | --asymmetric]
    [--method max|percentile:P|entropy|mse] [--weight-range auto|full|reduced] [--config FILE.json]
--config overrides the bit options (those given beside it are ignored, with a warning); --bits is the deprecated
old name of --act-bits (it still works, and warns).

Messages, help and errors are in Korean with `--lang ko` (before the sub-command), QX_LANG=ko, or a
Korean locale (LANG=ko_KR.UTF-8); English otherwise. Engine errors raised deep in qcore stay English.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import os
import unicodedata
from contextlib import contextmanager

from qcore.console import ConsoleProgress
from qcore.i18n import LANGUAGES, cli_language, translator
from qcore.quant.calibration import DEFAULT_METHODS
from qcore.quant.qconfig import WEIGHT_RANGES
from qcore.zoo.preprocess import PRESETS

__all__ = ["main"]

_translate = translator("en")


def _(msgid: str) -> str:
    """The CLI's text in the language main() chose (gettext's `_`; the msgids are the English text)."""
    return _translate(msgid)


def _set_language(argv: list[str]) -> None:
    """Choose the language before the parser is built, so its help texts are translated too."""
    global _translate
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--lang", choices=LANGUAGES, default=None)
    known, _rest = pre.parse_known_args([a for a in argv if a != "-h" and a != "--help"])
    _translate = translator(cli_language(known.lang, os.environ))


@contextmanager
def _argparse_in_language():
    """argparse's own texts (usage, options, its errors) in the chosen language while the parser is built and
    reads the arguments: argparse looks its module-global `_` up at call time. Restored afterwards."""
    texts = {"usage: ": _("usage: "), "positional arguments": _("positional arguments"), "options": _("options"),
             "show this help message and exit": _("show this help message and exit"),
             "%(prog)s: error: %(message)s\n": _("%(prog)s: error: %(message)s\n"),
             "the following arguments are required: %s": _("the following arguments are required: %s"),
             "invalid choice: %(value)r (choose from %(choices)s)": _("invalid choice: %(value)r (choose from %(choices)s)"),
             "argument %(argument_name)s: %(message)s": _("argument %(argument_name)s: %(message)s"),
             "unrecognized arguments: %s": _("unrecognized arguments: %s")}
    own = argparse._
    argparse._ = lambda msgid: texts.get(msgid) or own(msgid)
    try:
        yield
    finally:
        argparse._ = own


def _pad(text: str, width: int) -> str:
    """`text` padded to `width` terminal cells (left-aligned; right-aligned for a negative width): Hangul
    takes two cells, so str.format's padding would misalign translated table headers."""
    cells = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    fill = " " * max(0, abs(width) - cells)
    return fill + text if width < 0 else text + fill


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def _cmd_models(args) -> int:
    from qcore.zoo.models import DEFAULT_MODEL, list_models

    print("  " + _pad(_("name"), 22) + _pad(_("family"), 13) + _pad(_("input"), 14) + _pad(_("classes"), -8) + "  "
          + _("description"))
    for spec in list_models():
        mark = "* " if spec.name == DEFAULT_MODEL else "  "
        shape = "x".join(str(d) for d in spec.input_shape)
        print(f"{mark}{spec.name:22}{spec.family:13}{shape:14}{len(spec.class_names):>8}  {spec.description}")
    print("\n" + _("* default model. Built-in checkpoints live in assets/ (python -m qcore train NAME rebuilds one)."))
    return 0


def _cmd_train(args) -> int:
    from qcore.zoo.models import BUILTIN
    from qcore.train.builtin import train_builtin

    if args.name not in BUILTIN:
        raise CliError(_("only built-in models can be trained: {names}").format(names=", ".join(BUILTIN)))
    record = train_builtin(args.name, epochs=args.epochs, out_dir=Path(args.out_dir), seed=args.seed)
    print(json.dumps(record, indent=2))
    return 0


def _cmd_evaluate(args) -> int:
    from qcore.analysis.evaluate import evaluate
    from qcore.zoo.data import eval_subset
    from qcore.zoo.inputs import check_compatible, decode_for, default_data, load

    loaded = load(_model(args), args.weights)
    data = eval_subset(args.data or default_data(loaded), args.eval_size, args.seed, decode_for(loaded))
    if check_compatible(loaded, data) != "labels":
        raise CliError(_("{data} has no labels {model} knows, so there is no accuracy to measure: calibrate, "
                         "sensitivity and deploy score it by agreement with FP32").format(data=data.name, model=loaded.name))
    result = evaluate(loaded.module, loaded.spec.preprocess, data)
    print(_("{model} on {data} ({n} images): top-1 {top1}  top-5 {top5}").format(
        model=loaded.name, data=data.name, n=len(data), top1=f"{result.top1:.4f}", top5=f"{result.top5:.4f}"))
    return 0


OWN_MODEL_OPTIONS = ("arch", "input_shape", "preprocess", "mean", "std", "resize", "crop", "interpolation")


def _model(args):
    """--model as given: a registry name (with --weights: loaded from that file now, so every command honours
    it), or (an existing file) the user's model, loaded and checked now."""
    from qcore.zoo.inputs import load
    from qcore.zoo.preprocess import parse_floats, parse_shape
    from qcore.zoo.user_models import load_user_model

    if not Path(args.model).is_file():
        given = [f"--{o.replace('_', '-')}" for o in OWN_MODEL_OPTIONS if getattr(args, o, None) is not None]
        if given:
            raise CliError(_("{options} apply to a model file; {model} is not a file").format(
                options=", ".join(given), model=repr(args.model)))
        return load(args.model, args.weights) if getattr(args, "weights", None) else args.model
    try:
        shape = parse_shape(args.input_shape)
    except ValueError as exc:
        raise CliError(f"--input-shape: {exc}") from None
    overrides = {k: v for k, v in (("mean", parse_floats(args.mean)), ("std", parse_floats(args.std)),
                                   ("resize", args.resize), ("crop", args.crop),
                                   ("interpolation", args.interpolation)) if v is not None}
    preset_name = args.preprocess or ("custom" if overrides and not args.arch else None)
    return load_user_model(args.model, arch=args.arch, input_shape=shape, preprocess=preset_name,
                           preprocess_overrides=overrides or None)


QUANT_FLAGS = {"weight_bits": "--weight-bits", "act_bits": "--act-bits", "weight_granularity": "--granularity",
               "act_symmetric": "--symmetric/--asymmetric", "act_method": "--method"}


def _quant_config(args):
    """The QuantConfig of a run, the same way on every command that quantizes: --config FILE as written, else
    W8A8 per-channel max with the command's own defaults (qat: 4-bit weights) and the bit options on top;
    --weight-range applies to both. Bit options given beside --config are ignored, and said to be, not dropped
    silently."""
    from dataclasses import replace

    from qcore.quant.qconfig import QuantConfig

    given = {key: getattr(args, key) for key in QUANT_FLAGS if getattr(args, key, None) is not None}
    if getattr(args, "config", None):
        config = QuantConfig.from_json(Path(args.config).read_text())
        if given:
            print(_("warning: --config {file} sets the quantization; ignoring {flags}").format(
                file=args.config, flags=", ".join(QUANT_FLAGS[k] for k in given)), file=sys.stderr)
    else:
        config = QuantConfig().with_default(**{**args.quant_defaults, **given})
    return replace(config, weight_range=args.weight_range) if args.weight_range else config


def _cmd_calibrate(args) -> int:
    from qcore.analysis.experiments import compare_methods, parse_methods

    if args.act_method and args.methods:
        raise CliError(_("give --methods (several, compared) or --method (one), not both"))
    try:
        methods = parse_methods(args.methods or args.act_method or ",".join(DEFAULT_METHODS))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    progress = ConsoleProgress(keep_stages=True)
    report = compare_methods(model=_model(args), data=args.data, methods=methods, config=_quant_config(args),
                             calib_size=args.calib_size, eval_size=args.eval_size, seed=args.seed,
                             weights=args.weights, progress=progress)
    progress.end()
    if report.scored_by == "labels":
        print(_("{model} on {data}: FP32 top-1 {top1}").format(model=report.model, data=report.data,
                                                                top1=f"{report.fp32_accuracy:.4f}"))
    else:
        print(_("{model} on {data}: no labels the model knows; scored by agreement with FP32").format(
            model=report.model, data=report.data))
    print(_pad(_("method"), 22) + _pad(_("accuracy"), -10) + _pad(_("agreement"), -11) + _pad(_("logit SQNR dB"), -15)
          + f"{'KL':>9}")
    for row in report.methods:
        acc = f"{row.accuracy:>10.4f}" if report.scored_by == "labels" else f"{'-':>10}"
        label = row.method if row.used_method in ("", row.method) else f"{row.method} -> {row.used_method}"
        print(f"{label:22}{acc}{row.agreement:>11.4f}{row.logit_sqnr_db:>15.2f}{row.kl_vs_fp32:>9.4f}")
    for row in (r for r in report.methods if r.note):
        print(_("{method} was refused: {reason}").format(method=row.method, reason=row.note))
    print(_layers_line(report))
    print(_("statistics pass {stats} s, FP32 pass {fp32} s").format(stats=f"{report.stats_pass_seconds:.2f}",
                                                                    fp32=f"{report.fp32_pass_seconds:.2f}"))
    _remember(report)
    if args.out:
        _write(args.out, report)
    return 0


def _layers_line(report) -> str:
    """How many layers were quantized and which stay float (never a silent FP32 "INT8")."""
    floats = report.float_layers
    more = f": {', '.join(f['layer'] for f in floats[:6])}{' ...' if len(floats) > 6 else ''}" if floats else ""
    return _("{quantized} layers quantized, {floats} stay float").format(
        quantized=len(report.quantized_layers), floats=len(floats)) + more


def _cmd_deploy(args) -> int:
    from qcore.runtime.deploy import deploy
    config = _quant_config(args)
    progress = ConsoleProgress(keep_stages=True)
    report = deploy(
        model=_model(args), config=config, backend=args.backend, out_dir=args.out, data=args.data,
        calib_size=args.calib_size, eval_size=args.eval_size, seed=args.seed, threads=args.threads,
        iters=args.iters, batch_sizes=(1, args.batch), weights=args.weights,
        progress=progress,
    )
    progress.end()
    print("\n" + _("{model}: FP32 {fp32}, simulation {sim}, INT8 ({backend}) {int8}, top-1 agreement with simulation "
                   "{agreement}").format(model=report.model, fp32=_pct(report.fp32_accuracy),
                                         sim=_pct(report.simulation_accuracy), backend=report.backend,
                                         int8=_pct(report.int8_accuracy), agreement=_pct(report.agreement_with_simulation)))
    for batch, paths in report.latency_ms.items():
        print("\n" + _("batch {n}: median ms (p10-p90)").format(n=batch.removeprefix("batch_")))
        for name, t in paths.items():
            print(f"  {name:13}{t['median_ms']:9.3f}  ({t['p10_ms']:.3f}-{t['p90_ms']:.3f})")
    print("\n" + _("speedup of {backend} vs fastest FP32 ({fastest}): {speedups}").format(
        backend=report.backend, fastest=report.fastest_fp32,
        speedups=", ".join(_("batch {n}: {x}x").format(n=b, x=f"{s:.2f}")
                           for b, s in report.speedup_vs_fastest_fp32_by_batch.items())))
    print(_layers_line(report))
    for line in report.diagnosis:
        print(f"- {line}")
    print(_("wrote {files} to {out}").format(files=", ".join(report.files), out=args.out))
    _remember(report)
    return 0


def _cmd_sensitivity(args) -> int:
    from qcore.analysis.sensitivity import greedy_fallback, prepare, sweep

    config = _quant_config(args)
    say = ConsoleProgress()
    from qcore.run.executors import make_executor

    executor = make_executor(args.executor, args.workers)
    executor.info()  # starts or reaches Ray now: a bad address fails before the model loads
    p = prepare(_model(args), config, args.data, args.calib_size, args.eval_size, args.seed)
    report = sweep(p, progress=say, executor=executor)
    say.end()
    print(_("sweep ran on {engine} with {n} worker(s)").format(engine=report.executor["engine"],
                                                            n=report.executor["workers"]))
    if args.budget is not None:
        report.greedy = greedy_fallback(p, report, budget=args.budget, progress=say)
        say.end()
    print(_("{model}: FP32 {fp32}, all quantized {base} ({n} images, {seconds} s)").format(
        model=report.model, fp32=f"{report.fp32_accuracy:.4f}", base=f"{report.base_accuracy:.4f}", n=report.eval_size,
        seconds=f"{report.seconds:.1f}") + (_("; scored by agreement with FP32 (no labels)")
                                           if report.scored_by != "labels" else ""))
    print(_layers_line(report))
    print(_pad(_("layer"), 28) + _pad(_("only this"), -11) + _pad(_("all but this"), -14) + f"{'SQNR dB':>9}")
    for row in sorted(report.layers, key=lambda r: r.all_but_this, reverse=True):
        print(f"{row.name:28}{row.only_this_quantized:>11.4f}{row.all_but_this:>14.4f}{row.sqnr_db:>9.1f}")
    if report.greedy:
        g = report.greedy
        verdict = _("greedy fallback (budget {budget}): met with {n} float layer(s): {layers}") if g.met else _(
            "greedy fallback (budget {budget}): NOT met with {n} float layer(s): {layers}")
        print(verdict.format(budget=f"{g.budget:.3f}", n=len(g.float_layers), layers=", ".join(g.float_layers) or _("none")))
    _write(args.out, report)
    _remember(report)
    return 0


def _cmd_recover(args) -> int:
    from qcore.analysis.recovery import recover
    from qcore.quant.qconfig import parse_steps

    try:
        steps = parse_steps(args.steps)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not steps:
        raise CliError(_("give at least one step: --steps cle,bias_correction,adaround,gptq,smoothquant"))
    config = _quant_config(args)
    report, _sim = recover(_model(args), steps, config, args.data, args.calib_size, args.eval_size, args.seed,
                        cumulative=not args.separately,
                        progress=(progress := ConsoleProgress()))
    progress.end()
    print(_("{model} ({n} images): FP32 {fp32}").format(model=report.model, n=report.eval_size,
                                                         fp32=_pct(report.fp32_accuracy)))
    print(_pad(_("steps"), 40) + _pad(_("accuracy"), -10) + _pad(_("agreement"), -11) + _pad(_("seconds"), -9))
    plain = _("plain PTQ")
    for row in report.rows:
        print(f"{_pad('+'.join(row.steps) or plain, 40)}{row.accuracy:>10.4f}{row.agreement:>11.4f}{row.seconds:>9.1f}")
    print(_layers_line(report))
    _write(args.out, report)
    _remember(report)
    return 0


def _cmd_qat(args) -> int:
    from qcore.train.qat import QATRecipe, run_qat

    config = _quant_config(args)
    recipe = QATRecipe(steps=args.steps, minutes=None if args.steps is not None else (args.minutes or 2.0), epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, range_mode=args.range_mode, freeze_after=args.freeze_after,
                       bn_freeze_after=args.bn_freeze_after)
    out = Path(args.out)
    files_dir = out.with_suffix("")
    progress = ConsoleProgress()

    def on_metric(row):
        if row["kind"] == "epoch":
            int8 = _(", INT8 {acc} at {ms} ms").format(acc=_pct(row.get('int8_accuracy')), ms=f"{row['int8_latency_ms']:.3f}") \
                if "int8_latency_ms" in row else ""
            progress.line(_("epoch {epoch} (step {step}): fake-quant {acc}").format(
                epoch=row['epoch'], step=row['step'], acc=_pct(row['fake_quant_accuracy'])) + int8)

    from qcore.train.ddp import from_environment

    ranks = from_environment()  # under torchrun: this process's rank
    result = run_qat(_model(args), config, recipe, args.data, args.calib_size,
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
        model=report.model, n=report.eval_images, fp32=_pct(report.fp32_accuracy), ptq=_pct(report.ptq_accuracy),
        qat=_pct(report.qat_accuracy), int8=_pct(report.int8_accuracy)))
    print(_("fine-tune {steps} steps in {seconds} s on {device}; a fake-quant step costs {x}x a FP32 step there").format(
        steps=report.steps, seconds=f"{report.seconds:.1f}", device=report.distributed["device"],
        x=f"{report.step_overhead_vs_fp32:.2f}"))
    _write(out, report, quiet=True)
    print(_("wrote {out} and {files} in {folder}").format(out=out, files=", ".join(report.files), folder=files_dir))
    _remember(report)
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
        figs.append((tr("Step 2: layers kept in float"),
                     float_layers_curve_figure(report.step("partial").detail["curve"], report.fp32_accuracy)))
    return figs


def _cmd_workflow(args) -> int:
    from qcore.workflow import Target, WorkflowOptions, run_workflow
    from qcore.workflow.document import summary_rows, to_html, to_markdown

    target = Target(max_drop=None if args.max_drop is None else args.max_drop / 100, min_speedup=args.min_speedup)
    config = _quant_config(args)
    options = WorkflowOptions(max_float=args.max_float, allow_qat=not args.no_qat, qat_fraction=args.qat_share / 100)
    out = Path(args.out)
    report = run_workflow(_model(args), target, config, options, args.data, args.calib_size, args.eval_size, args.seed,
                          out, progress=(progress := ConsoleProgress()))
    progress.end()
    for row in summary_rows(report, _):
        print("  ".join(row))
    (out / "report.md").write_text(to_markdown(report, _))
    (out / "report.html").write_text(to_html(report, _, _workflow_figures(report, _)))
    _write(out / "report.json", report, quiet=True)
    print(_("wrote {files} in {folder}").format(files="report.md, report.html, report.json", folder=out))
    _remember(report)
    return 0 if report.met_by else 1


HEADLINE = ("fp32_accuracy", "simulation_accuracy", "base_accuracy", "ptq_accuracy", "qat_accuracy", "int8_accuracy",
            "speedup_vs_fastest_fp32")


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(_("run ids are numbers separated by commas, not {text}").format(text=repr(text))) from None


def _cmd_history(args) -> int:
    from qcore.store import history

    if args.delete:
        n = history.delete_runs(_ids(args.delete))
        print(_("deleted {n} run(s) from {path}").format(n=n, path=history.db_path()))
        return 0
    runs = history.get_runs(_ids(args.compare)) if args.compare else history.list_runs(args.kind, args.model)
    if args.export:
        if not args.out:
            raise CliError(_("--export needs --out FILE"))
        text = history.to_csv(runs) if args.export == "csv" else history.to_json(runs)
        Path(args.out).write_text(text)
        print(_("wrote {n} run(s) to {out}").format(n=len(runs), out=args.out))
        return 0
    if not runs:
        print((_("no runs in {path} match") if args.kind or args.model else _("no runs in {path}")).format(
            path=history.db_path()))
        return 0
    if args.compare:
        rows = history.flat_rows(runs)
        names = [c for row in rows for c in row if c not in ("id",)]
        for col in dict.fromkeys(names):
            print(f"{col:44}" + "".join(f"{_cell(row.get(col)):>16}" for row in rows))
        return 0
    print(f"{'id':>5}  " + _pad(_("time"), 19) + "  " + _pad(_("kind"), 12) + _pad(_("model"), 18) + _pad(_("data"), 16)
          + "  " + _("headline"))
    for row in history.flat_rows(runs):
        head = ", ".join(f"{k.replace('_accuracy', '')} {_cell(row[k])}" for k in HEADLINE if k in row)
        print(f"{row['id']:>5}  {row['time']:19}  {row['kind']:12}{row['model'][:17]:18}{str(row['data'])[:15]:16}  {head}")
    print(_("{n} run(s) in {path}").format(n=len(runs), path=history.db_path()))
    return 0


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)[:15]


def _remember(report) -> None:
    from qcore.store.history import remember

    run_id = remember(report, say=lambda msg: print(_("warning: {message}").format(message=msg), file=sys.stderr))
    if run_id is not None:
        print(_("saved as run {id} in the history (python -m qcore history)").format(id=run_id))


def _write(path, report, quiet: bool = False) -> None:
    """The report's JSON to `path` (folders made as needed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(report.to_json())
    if not quiet:
        print(_("wrote {path}").format(path=path))


def _pct(x) -> str:
    return _("n/a") if x is None else f"{x:.2%}"


class _DeprecatedBits(argparse.Action):
    """--bits, the old name of --act-bits on `calibrate`: still works, and says so on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(_("warning: --bits is deprecated; use --act-bits (the same activation bits)"), file=sys.stderr)
        setattr(namespace, self.dest, values)


def _quant_flags(sp, weight_bits: int = 8) -> None:
    """The quantization options every command that quantizes takes, with the same names and meanings. Their
    defaults are None so that `_quant_config` can tell a flag given from one left alone (and warn when --config
    overrides one); the command's own defaults go to `quant_defaults`."""
    g = sp.add_argument_group(_("quantization (the same on every command that quantizes)"))
    g.add_argument("--config", default=None, metavar="FILE",
                   help=_("a QuantConfig JSON file; it overrides the bit options below (default: W{w}A8 per-channel, "
                          "max)").format(w=weight_bits))
    g.add_argument("--weight-bits", type=int, default=None, metavar="N", help=_("weight bits, 2 to 8 (default: {n})").format(n=weight_bits))
    g.add_argument("--act-bits", type=int, default=None, metavar="N", help=_("activation bits, 2 to 16 (default: 8)"))
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
    own.add_argument("--input-shape", default=None, help=_("C,H,W, e.g. 3,224,224 (.pt2 and .onnx files)"))
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
    sub.add_parser("models", help=_("list the registered models")).set_defaults(fn=_cmd_models)
    t = sub.add_parser("train", help=_("train a built-in model and write its checkpoint"))
    t.add_argument("name")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out-dir", default="assets")
    t.set_defaults(fn=_cmd_train)
    e = sub.add_parser("evaluate", help=_("FP32 accuracy of a model"))
    _common(e)
    e.set_defaults(fn=_cmd_evaluate)
    h = sub.add_parser("history", help=_("stored runs: list, compare, delete, export"))
    h.add_argument("--kind", choices=["calibration", "sensitivity", "deploy", "qat", "recovery"], default=None)
    h.add_argument("--model", default=None, help=_("model name contains this"))
    h.add_argument("--compare", default=None, help=_("run ids side by side, e.g. 3,7"))
    h.add_argument("--delete", default=None, help=_("run ids to delete, e.g. 3,7"))
    h.add_argument("--export", choices=["csv", "json"], default=None)
    h.add_argument("--out", default=None)
    h.set_defaults(fn=_cmd_history)
    b = sub.add_parser("bench", help=_("benchmarks that write JSON (python -m qcore bench calibrate|latency ...)"),
                       add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=_cmd_bench)


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
    c.set_defaults(fn=_cmd_calibrate, eval_size=None)
    d = sub.add_parser("deploy", help=_("real INT8 models from a config: accuracy, agreement, latency, files"))
    _common(d)
    _quant_flags(d)
    d.add_argument("--backend", default="auto", choices=["auto", "x86", "ort"])
    d.add_argument("--calib-size", type=int, default=512)
    d.add_argument("--batch", type=int, default=32, help=_("the larger batch timed besides batch 1"))
    d.add_argument("--threads", type=int, default=torch_threads())
    d.add_argument("--iters", type=int, default=30)
    d.add_argument("--out", required=True, help=_("output directory"))
    d.set_defaults(fn=_cmd_deploy)
    sn = sub.add_parser("sensitivity", help=_("per-layer two-sided sensitivity sweep (and greedy float fallback)"))
    _common(sn)
    _quant_flags(sn)
    sn.add_argument("--calib-size", type=int, default=512)
    sn.add_argument("--budget", type=float, default=None, help=_("accuracy drop allowed vs FP32, e.g. 0.01"))
    sn.add_argument("--executor", default="local",
                    help=_("local (this process), ray (a local Ray instance, or $RAY_ADDRESS), or a cluster: "
                           "ray://HOST:PORT"))
    sn.add_argument("--workers", type=int, default=None, help=_("CPUs of the local Ray instance (default: all)"))
    sn.add_argument("--out", required=True)
    sn.set_defaults(fn=_cmd_sensitivity, eval_size=1000)


def _add_recover(sub) -> None:
    r = sub.add_parser("recover", help=_("accuracy recovery: CLE, bias correction, AdaRound, GPTQ, SmoothQuant vs plain PTQ"))
    _common(r)
    _quant_flags(r)
    r.add_argument("--steps", required=True,
                   help=_("in order, e.g. cle,bias_correction,adaround:iters=500 (settings: adaround iters/reg, "
                        "gptq damp, smoothquant alpha, cle high_bias=0|1; ';' between settings)"))
    r.add_argument("--separately", action="store_true", help=_("each step alone (then all), instead of adding them in turn"))
    r.add_argument("--calib-size", type=int, default=512)
    r.add_argument("--out", required=True)
    r.set_defaults(fn=_cmd_recover, eval_size=2000)


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
    q.set_defaults(fn=_cmd_qat)


def _add_workflow(sub) -> None:
    w = sub.add_parser("workflow", help=_("guided PTQ -> partial quantization -> QAT to a target, ending in real "
                                          "INT8 and a Markdown/HTML report (exit code 1: target not met)"))
    _common(w)
    _quant_flags(w)
    w.add_argument("--max-drop", type=float, default=1.0,
                   help=_("accuracy target: at most this many points below FP32 (default 1)"))
    w.add_argument("--min-speedup", type=float, default=None,
                   help=_("speed target: real INT8 at least this many times faster than FP32 at batch 1"))
    w.add_argument("--max-float", type=int, default=5, help=_("most layers step 2 may keep in float"))
    w.add_argument("--no-qat", action="store_true", help=_("stop after step 2"))
    w.add_argument("--qat-share", type=float, default=10.0,
                   help=_("QAT steps as a share of the original training schedule, in %% (at most 10)"))
    w.add_argument("--calib-size", type=int, default=512)
    w.add_argument("--out", required=True, help=_("folder for report.md, report.html, report.json and the INT8 files"))
    w.set_defaults(fn=_cmd_workflow, eval_size=1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qcore", description=_("Quantization Explorer engine"))
    p.add_argument("--lang", choices=LANGUAGES, default=None,
                   help=_("language of messages and help: en or ko (default: $QX_LANG, else the locale)"))
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_basics(sub)
    _add_ptq(sub)
    _add_recover(sub)
    _add_qat(sub)
    _add_workflow(sub)
    return p


def _cmd_bench(args) -> int:
    from qcore.bench import main as bench_main

    return bench_main(args.rest)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    from qcore.zoo.data import DataUnavailable
    from qcore.zoo.models import ModelUnavailable

    argv = sys.argv[1:] if argv is None else list(argv)
    _set_language(argv)
    with _argparse_in_language():
        args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (CliError, DataUnavailable, ModelUnavailable, ValueError, FloatingPointError) as exc:
        print(_("error: {message}").format(message=exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

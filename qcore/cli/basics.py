"""The commands that do not quantize: models, train, evaluate, history, bench."""

from __future__ import annotations

import json
from pathlib import Path

from qcore.cli.language import _
from qcore.cli.options import model_arg
from qcore.cli.output import CliError, cell, pad

__all__ = ["cmd_models", "cmd_train", "cmd_evaluate", "cmd_history", "cmd_bench"]


def cmd_models(args) -> int:
    from qcore.zoo.models import DEFAULT_MODEL, list_models

    print("  " + pad(_("name"), 22) + pad(_("family"), 13) + pad(_("input"), 14) + pad(_("classes"), -8) + "  "
          + _("description"))
    for spec in list_models():
        mark = "* " if spec.name == DEFAULT_MODEL else "  "
        shape = "x".join(str(d) for d in spec.input_shape)
        print(f"{mark}{spec.name:22}{spec.family:13}{shape:14}{len(spec.class_names):>8}  {spec.description}")
    print("\n" + _("* default model. Built-in checkpoints live in assets/ (python -m qcore train NAME rebuilds one)."))
    return 0


def cmd_train(args) -> int:
    from qcore.zoo.models import BUILTIN
    from qcore.train.builtin import train_builtin

    if args.name not in BUILTIN:
        raise CliError(_("only built-in models can be trained: {names}").format(names=", ".join(BUILTIN)))
    record = train_builtin(args.name, epochs=args.epochs, out_dir=Path(args.out_dir), seed=args.seed)
    print(json.dumps(record, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from qcore.analysis.evaluate import evaluate
    from qcore.zoo.data import eval_subset
    from qcore.zoo.inputs import check_compatible, decode_for, default_data, load

    loaded = load(model_arg(args), args.weights)
    data = eval_subset(args.data or default_data(loaded), args.eval_size, args.seed, decode_for(loaded))
    if check_compatible(loaded, data) != "labels":
        raise CliError(_("{data} has no labels {model} knows, so there is no accuracy to measure: calibrate, "
                         "sensitivity and deploy score it by agreement with FP32").format(data=data.name, model=loaded.name))
    result = evaluate(loaded.module, loaded.spec.preprocess, data)
    print(_("{model} on {data} ({n} images): top-1 {top1}  top-5 {top5}").format(
        model=loaded.name, data=data.name, n=len(data), top1=f"{result.top1:.4f}", top5=f"{result.top5:.4f}"))
    return 0


HEADLINE = ("fp32_accuracy", "simulation_accuracy", "base_accuracy", "ptq_accuracy", "qat_accuracy", "int8_accuracy",
            "speedup_vs_fastest_fp32")


def run_ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(_("run ids are numbers separated by commas, not {text}").format(text=repr(text))) from None


def cmd_history(args) -> int:
    from qcore.store import history

    if args.delete:
        n = history.delete_runs(run_ids(args.delete))
        print(_("deleted {n} run(s) from {path}").format(n=n, path=history.db_path()))
        return 0
    runs = history.get_runs(run_ids(args.compare)) if args.compare else history.list_runs(args.kind, args.model)
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
            print(f"{col:44}" + "".join(f"{cell(row.get(col)):>16}" for row in rows))
        return 0
    print(f"{'id':>5}  " + pad(_("time"), 19) + "  " + pad(_("kind"), 12) + pad(_("model"), 18) + pad(_("data"), 16)
          + "  " + _("headline"))
    for row in history.flat_rows(runs):
        head = ", ".join(f"{k.replace('_accuracy', '')} {cell(row[k])}" for k in HEADLINE if k in row)
        print(f"{row['id']:>5}  {row['time']:19}  {row['kind']:12}{row['model'][:17]:18}{str(row['data'])[:15]:16}  {head}")
    print(_("{n} run(s) in {path}").format(n=len(runs), path=history.db_path()))
    return 0


def cmd_bench(args) -> int:
    from qcore.bench import main as bench_main

    return bench_main(args.rest)

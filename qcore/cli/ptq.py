"""The post-training commands: calibrate, deploy, sensitivity, recover."""

from __future__ import annotations

from qcore.cli.language import _, console_progress
from qcore.cli.options import model_arg, quant_config
from qcore.cli.output import CliError, layers_line, pad, pct, remember_run, write_report
from qcore.quant.calibration import DEFAULT_METHODS

__all__ = ["cmd_calibrate", "cmd_deploy", "cmd_sensitivity", "cmd_recover"]


def cmd_calibrate(args) -> int:
    from qcore.analysis.experiments import compare_methods, parse_methods

    if args.act_method and args.methods:
        raise CliError(_("give --methods (several, compared) or --method (one), not both"))
    try:
        methods = parse_methods(args.methods or args.act_method or ",".join(DEFAULT_METHODS))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    progress = console_progress(keep_stages=True)
    report = compare_methods(model=model_arg(args), data=args.data, methods=methods, config=quant_config(args),
                             calib_size=args.calib_size, eval_size=args.eval_size, seed=args.seed,
                             weights=args.weights, progress=progress)
    progress.end()
    if report.identity.scored_by == "labels":
        print(_("{model} on {data}: FP32 top-1 {top1}").format(model=report.identity.model, data=report.identity.data,
                                                                top1=f"{report.fp32_accuracy:.4f}"))
    else:
        print(_("{model} on {data}: no labels the model knows; scored by agreement with FP32").format(
            model=report.identity.model, data=report.identity.data))
    print(pad(_("method"), 22) + pad(_("accuracy"), -10) + pad(_("agreement"), -11) + pad(_("logit SQNR dB"), -15)
          + f"{'KL':>9}")
    for row in report.methods:
        acc = f"{row.accuracy:>10.4f}" if report.identity.scored_by == "labels" else f"{'-':>10}"
        label = row.method if row.used_method in ("", row.method) else f"{row.method} -> {row.used_method}"
        print(f"{label:22}{acc}{row.agreement:>11.4f}{row.logit_sqnr_db:>15.2f}{row.kl_vs_fp32:>9.4f}")
    for row in (r for r in report.methods if r.note):
        print(_("{method} was refused: {reason}").format(method=row.method, reason=row.note))
    print(layers_line(report))
    print(_("statistics pass {stats} s, FP32 pass {fp32} s").format(stats=f"{report.stats_pass_seconds:.2f}",
                                                                    fp32=f"{report.fp32_pass_seconds:.2f}"))
    remember_run(report)
    if args.out:
        write_report(args.out, report)
    return 0


def cmd_deploy(args) -> int:
    from qcore.runtime.deploy import deploy
    config = quant_config(args)
    progress = console_progress(keep_stages=True)
    report = deploy(
        model=model_arg(args), config=config, backend=args.backend, out_dir=args.out, data=args.data,
        calib_size=args.calib_size, eval_size=args.eval_size, seed=args.seed, threads=args.threads,
        iters=args.iters, batch_sizes=(1, args.batch), weights=args.weights,
        progress=progress,
    )
    progress.end()
    print("\n" + _("{model}: FP32 {fp32}, simulation {sim}, INT8 ({backend}) {int8}, top-1 agreement with simulation "
                   "{agreement}").format(model=report.identity.model, fp32=pct(report.fp32_accuracy),
                                         sim=pct(report.simulation_accuracy), backend=report.backend,
                                         int8=pct(report.int8_accuracy), agreement=pct(report.agreement_with_simulation)))
    for batch, paths in report.latency_ms.items():
        print("\n" + _("batch {n}: median ms (p10-p90)").format(n=batch.removeprefix("batch_")))
        for name, t in paths.items():
            print(f"  {name:13}{t['median_ms']:9.3f}  ({t['p10_ms']:.3f}-{t['p90_ms']:.3f})")
    print("\n" + _("speedup of {backend} vs fastest FP32 ({fastest}): {speedups}").format(
        backend=report.backend, fastest=report.fastest_fp32,
        speedups=", ".join(_("batch {n}: {x}x").format(n=b, x=f"{s:.2f}")
                           for b, s in report.speedup_vs_fastest_fp32_by_batch.items())))
    print(layers_line(report))
    for line in report.diagnosis:
        print(f"- {line}")
    print(_("wrote {files} to {out}").format(files=", ".join(report.files), out=args.out))
    remember_run(report)
    return 0


def cmd_sensitivity(args) -> int:
    from qcore.analysis.sensitivity import greedy_fallback, prepare, swept_layers, sweep

    config = quant_config(args)
    say = console_progress()
    from qcore.run.executors import make_executor

    executor = make_executor(args.executor, args.workers)
    executor.info()  # starts or reaches Ray now: a bad address fails before the model loads
    p = prepare(model_arg(args), config, args.data, args.calib_size, args.eval_size, args.seed)
    names = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    layers = swept_layers(p, names, args.max_layers)
    report = sweep(p, progress=say, executor=executor, layers=layers)
    say.end()
    print(_("sweep ran on {engine} with {n} worker(s)").format(engine=report.executor["engine"],
                                                            n=report.executor["workers"]))
    if args.budget is not None:
        report.greedy = greedy_fallback(p, report, budget=args.budget, progress=say)
        say.end()
    print(_("{model}: FP32 {fp32}, all quantized {base} ({n} images, {seconds} s)").format(
        model=report.identity.model, fp32=f"{report.fp32_accuracy:.4f}", base=f"{report.base_accuracy:.4f}", n=report.eval_size,
        seconds=f"{report.seconds:.1f}") + (_("; scored by agreement with FP32 (no labels)")
                                           if report.identity.scored_by != "labels" else ""))
    print(layers_line(report))
    if len(layers) < len(p.sim.layer_names()):
        print(_("swept {n} of the {total} layers (--layers/--max-layers)").format(n=len(layers),
                                                                                  total=len(p.sim.layer_names())))
    print(pad(_("layer"), 28) + pad(_("only this"), -11) + pad(_("all but this"), -14) + f"{'SQNR dB':>9}")
    for row in sorted(report.layers, key=lambda r: r.all_but_this, reverse=True):
        print(f"{row.name:28}{row.only_this_quantized:>11.4f}{row.all_but_this:>14.4f}{row.sqnr_db:>9.1f}")
    if report.greedy:
        g = report.greedy
        verdict = _("greedy fallback (budget {budget}): met with {n} float layer(s): {layers}") if g.met else _(
            "greedy fallback (budget {budget}): NOT met with {n} float layer(s): {layers}")
        print(verdict.format(budget=f"{g.budget:.3f}", n=len(g.float_layers), layers=", ".join(g.float_layers) or _("none")))
    write_report(args.out, report)
    remember_run(report)
    return 0


def cmd_recover(args) -> int:
    from qcore.analysis.recovery import recover
    from qcore.quant.qconfig import parse_steps

    try:
        steps = parse_steps(args.steps)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not steps:
        raise CliError(_("give at least one step: --steps cle,bias_correction,adaround,gptq,brecq,smoothquant"))
    config = quant_config(args)
    report, _sim = recover(model_arg(args), steps, config, args.data, args.calib_size, args.eval_size, args.seed,
                        cumulative=not args.separately,
                        progress=(progress := console_progress()))
    progress.end()
    print(_("{model} ({n} images): FP32 {fp32}").format(model=report.identity.model, n=report.eval_size,
                                                         fp32=pct(report.fp32_accuracy)))
    print(pad(_("steps"), 40) + pad(_("accuracy"), -10) + pad(_("agreement"), -11) + pad(_("seconds"), -9))
    plain = _("plain PTQ")
    for row in report.rows:
        print(f"{pad('+'.join(row.steps) or plain, 40)}{row.accuracy:>10.4f}{row.agreement:>11.4f}{row.seconds:>9.1f}")
    print(layers_line(report))
    write_report(args.out, report)
    remember_run(report)
    return 0

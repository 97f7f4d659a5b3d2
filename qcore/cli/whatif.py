"""`python -m qcore whatif`: edit one layer (clip range, bits, granularity, symmetry, or float) and print its output
SQNR and the model's accuracy before and after, as the Calibration page's what-if editor does."""

from __future__ import annotations

from qcore.cli.language import _, console_progress
from qcore.cli.options import model_arg, quant_config
from qcore.cli.output import CliError, pad, pct

__all__ = ["cmd_whatif", "layer_changes"]


def _clip(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise CliError(_("--clip takes LO,HI (two numbers), not {text}").format(text=repr(text))) from None
    if not lo < hi:
        raise CliError(_("--clip needs LO < HI, not {text}").format(text=repr(text)))
    return lo, hi


def layer_changes(args) -> dict:
    """The LayerConfig fields the layer flags change (none given: the current config, measured)."""
    changes = {}
    if args.clip:
        changes["act_clip"] = _clip(args.clip)
    if args.layer_bits is not None:
        changes["weight_bits"] = changes["act_bits"] = args.layer_bits
    if args.layer_weight_bits is not None:
        changes["weight_bits"] = args.layer_weight_bits
    if args.layer_act_bits is not None:
        changes["act_bits"] = args.layer_act_bits
    if args.layer_granularity:
        changes["weight_granularity"] = args.layer_granularity
    if args.layer_symmetric is not None:
        changes["act_symmetric"] = args.layer_symmetric
    if args.float:
        changes["enabled"] = False
    return changes


def _range(r) -> str:
    return "-" if r.clip_min is None else f"[{r.clip_min:.4g}, {r.clip_max:.4g}] ({r.range_method})"


def _print(before, after) -> None:
    print(_("{model}, layer {layer}: accuracy on {n} images, layer output SQNR against FP32 on {k} images").format(
        model=after.model, layer=after.layer, n=after.eval_size, k=after.sqnr_images))
    print(pad("", 16) + pad(_("current"), -30) + pad(_("edited"), -30) + pad(_("change"), -12))
    print(pad(_("clip range"), 16) + f"{_range(before):>30}{_range(after):>30}")
    print(pad(_("accuracy"), 16) + f"{pct(before.accuracy):>30}{pct(after.accuracy):>30}"
          + f"{after.delta_accuracy * 100:>+10.2f}pt")
    print(pad(_("SQNR dB"), 16) + f"{before.layer_sqnr_db:>30.2f}{after.layer_sqnr_db:>30.2f}"
          + f"{after.delta_sqnr_db:>+12.2f}")
    changed = ", ".join(f"{k}={v}" for k, v in after.changes.items()) or _("nothing (the current config)")
    print(_("changes: {changes}").format(changes=changed))
    print(_("edit measured in {seconds} s").format(seconds=f"{after.seconds:.2f}")
          + (_(" ({n} later quantizers calibrated again)").format(n=after.recalibrated) if after.recalibrated else ""))


def cmd_whatif(args) -> int:
    from qcore.analysis.whatif import WhatIf

    changes = layer_changes(args)
    say = console_progress(keep_stages=True)
    session = WhatIf.build(model_arg(args), quant_config(args), args.data, args.calib_size, args.eval_size, args.seed,
                           progress=say)
    say.end()
    if args.layer not in session.layers:
        raise CliError(_("no layer {layer}; the model's layers: {layers}").format(
            layer=repr(args.layer), layers=", ".join(session.layers)))
    before = session.choose(args.layer)
    try:
        after = session.edit(**changes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _print(before, after)
    if args.out:
        from pathlib import Path
        import json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"before": before.to_dict(), "after": after.to_dict(),
                                              "config": session.sim.config.to_dict()}, indent=2))
        print(_("wrote {path}").format(path=args.out))
    return 0

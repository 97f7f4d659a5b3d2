"""What the options of every command mean: --model (a registry name or the user's file, with its
preprocessing) and the quantization flags every command that quantizes shares."""

from __future__ import annotations

import sys
from pathlib import Path

from qcore.cli.language import _
from qcore.cli.output import CliError

__all__ = ["OWN_MODEL_OPTIONS", "QUANT_FLAGS", "model_arg", "quant_config", "torch_threads"]

OWN_MODEL_OPTIONS = ("arch", "input_shape", "preprocess", "mean", "std", "resize", "crop", "interpolation")


def model_arg(args):
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


def quant_config(args):
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


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()

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
                             [--no-recovery] [--max-float 5] [--no-qat] [--qat-share 10] --out DIR   (exit 1: target not met)
    python -m qcore graph [--model NAME|FILE] [--metric sqnr|clip_error|rounding_error|range|bits|quantized|sensitivity]
                          [--calib-size N] [--sensitivity FILE.json] [--max-nodes 60] [--expand BLOCK,...]
                          --out graph.html [--json graph.json]
    python -m qcore diagnose [--model NAME|FILE] [--calib-size 512] [--eval-size 1000] [--apply-best] --out FILE.json

Every command that quantizes (calibrate, deploy, sensitivity, recover, qat, workflow, graph, diagnose) takes the same options:
    [--weight-bits 8 (qat: 4)] [--act-bits 8] [--granularity channel|tensor] [--symmetric | --asymmetric]
    [--method max|percentile:P|entropy|mse] [--weight-range auto|full|reduced] [--config FILE.json]
--config overrides the bit options (those given beside it are ignored, with a warning); --bits is the deprecated
old name of --act-bits (it still works, and warns).

Messages, help and errors are in Korean with `--lang ko` (before the sub-command), QX_LANG=ko, or a
Korean locale (LANG=ko_KR.UTF-8); English otherwise. Engine errors raised deep in qcore stay English.
"""

from __future__ import annotations

import sys

from qcore.cli.language import _, argparse_in_language, set_language
from qcore.cli.output import CliError
from qcore.cli.parser import build_parser

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    from qcore.zoo.data import DataUnavailable
    from qcore.zoo.models import ModelUnavailable

    argv = sys.argv[1:] if argv is None else list(argv)
    set_language(argv)
    with argparse_in_language():
        args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (CliError, DataUnavailable, ModelUnavailable, ValueError, FloatingPointError) as exc:
        print(_("error: {message}").format(message=exc), file=sys.stderr)
        return 2

"""Seconds per what-if edit on a model (default fm_resnet, 1000 evaluation images): for an early, a middle and a
late layer, an activation edit (a clip range) and a weight edit (4-bit weights), each repeated and the best kept
(the machine may be shared). Prints one JSON object.

    .venv/bin/python scripts/whatif_timing.py [--model fm_resnet] [--eval-size 1000] [--repeats 3]
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from qcore.analysis.whatif import WhatIf  # noqa: E402
from qcore.quant.isa import cpu_isa  # noqa: E402


@torch.no_grad()
def _fp32_pass(w) -> float:
    start = time.perf_counter()
    for x in w.inputs.eval_batches:
        w.inputs.loaded.module(x)
    return round(time.perf_counter() - start, 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fm_resnet")
    ap.add_argument("--eval-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", default=None, help="comma-separated (default: the second, the middle, the last but one)")
    args = ap.parse_args()
    start = time.perf_counter()
    w = WhatIf.build(args.model, eval_size=args.eval_size)
    out = {"model": args.model, "eval_size": args.eval_size, "threads": torch.get_num_threads(),
           "cpu": cpu_isa().to_dict(), "build_s": round(time.perf_counter() - start, 2), "layers": {}}
    names = args.layers.split(",") if args.layers else [w.layers[1], w.layers[len(w.layers) // 2], w.layers[-2]]
    for name in names:
        t0 = time.perf_counter()
        base = w.choose(name)
        row = {"choose_s": round(time.perf_counter() - t0, 2)}
        edits = {"clip": {"act_clip": (base.clip_min, base.clip_max / 2)}}
        if name in w.sim.weight_layers:
            edits["weight_bits_4"] = {"weight_bits": 4}
        for label, changes in edits.items():
            walls, cpus = [], []
            for _ in range(args.repeats):
                c0 = time.process_time()
                walls.append(w.edit(**changes).seconds)
                cpus.append(time.process_time() - c0)
            # wall: best of the repeats; cpu: the process's CPU seconds (both threads) for that edit, which on an
            # idle machine with 2 threads comes to about half as many wall seconds
            row[label + "_s"], row[label + "_cpu_s"] = min(walls), round(min(cpus), 3)
            w.reset()
        # a load-independent yardstick: the plain FP32 model's pass over the same images, timed between the edits
        row["fp32_pass_s"] = min(_fp32_pass(w) for _ in range(args.repeats))
        out["layers"][name] = row
    out["load_average"] = list(__import__("os").getloadavg())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

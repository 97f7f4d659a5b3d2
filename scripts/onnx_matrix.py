"""The ONNX exporter matrix (issue 23): every (architecture, exporter, opset) exported with random weights,
imported through qcore's importer, compared with onnxruntime on the same file and input, and quantized.

Run:  PYTHONPATH=. python scripts/onnx_matrix.py [--archs a,b] [--opsets 13,17] [--out table.md]
Exports are cached under --cache (they take most of the time). One thread, batch 1 (and 2 for the check
that the batch axis stayed dynamic), 2 images for calibration: sized for a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
import warnings
from pathlib import Path

import torch

from tests.zoo.onnx_helpers import export_onnx, file_opset, import_and_check

ARCHS = ("resnet50", "mobilenetv2_100", "mobilenetv3_large_100", "tf_efficientnet_lite0", "efficientnet_b0",
         "regnety_002", "convnext_atto", "vit_tiny_patch16_224", "tv:mobilenet_v3_small", "tv:efficientnet_b0")
OPSETS = (13, 17, 18, 20, 23)
EXPORTERS = ("legacy", "dynamo")


def build(arch: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """Random weights (no downloads), eval mode, the model's own input size."""
    torch.manual_seed(0)
    if arch.startswith("tv:"):
        import torchvision

        return torchvision.models.get_model(arch[3:], weights=None).eval(), (3, 224, 224)
    import timm

    model = timm.create_model(arch, pretrained=False).eval()
    return model, tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))


def vanilla_missing(path: Path, registry_snapshot: dict) -> list[str]:
    """Operators onnx2torch 1.5.15 alone (without qcore's registrations) has no converter for."""
    import onnx
    from onnx import defs

    model = onnx.load(str(path), load_external_data=False)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    missing = set()
    for n in model.graph.node:
        dom, ver = n.domain or "", opsets.get(n.domain or "", 0)
        try:
            ver = defs.get_schema(n.op_type, domain=dom, max_inclusive_version=ver).since_version
        except Exception:
            pass
        if (dom, n.op_type, ver) not in registry_snapshot:
            missing.add(f"{n.op_type}-{ver}")
    return sorted(missing)


def run_case(arch, exporter, opset, cache: Path, snapshot, models, export_only=False) -> dict:
    row = {"arch": arch, "exporter": exporter, "opset": opset}
    path = cache / f"{arch.replace(':', '_')}_{exporter}_{opset}.onnx"
    if arch not in models:
        models.clear()
        models[arch] = build(arch)
    model, shape = models[arch]
    if not path.exists():
        t = time.perf_counter()
        try:
            export_onnx(model, shape, path, exporter, opset, external_data=exporter == "dynamo")
        except Exception as exc:
            row["export_error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
            if exporter != "dynamo":
                return row
            try:  # torch.export keeps some batch axes dynamic only from a batch-2 example
                export_onnx(model, shape, path, exporter, opset, external_data=True, batch=2)
                row["export_note"] = "batch-1 example failed (torch.export guard); exported from batch 2"
                del row["export_error"]
            except Exception:
                return row
        row["export_s"] = round(time.perf_counter() - t, 1)
    row["file_opset"] = file_opset(path)
    row["needed_help"] = vanilla_missing(path, snapshot)
    if export_only:
        return row
    try:
        t = time.perf_counter()
        row.update(import_and_check(path, shape))
        row["check_s"] = round(time.perf_counter() - t, 1)
    except Exception as exc:
        row["import_error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        row["trace"] = traceback.format_exc()[-800:]
    return row


def table(rows: list[dict]) -> str:
    """Markdown: one line per case."""
    lines = ["| architecture | exporter | opset asked (file) | imported | max abs diff vs ORT (relative) "
             "| quantized (weight layers / float layers) | ops that needed help |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "export_error" in r:
            lines.append(f"| {r['arch']} | {r['exporter']} | {r['opset']} | export failed: {r['export_error'][:90]} | | | |")
            continue
        ok = "yes" if "import_error" not in r else f"NO: {r['import_error'][:120]}"
        ok += " (exported from a batch-2 example)" if r.get("export_note") else ""
        folded = f"; {r['folded']} shape nodes folded" if r.get("folded") else ""
        diff = f"{r['max_abs_diff']:.1e} ({r['rel_diff']:.0e})" if "max_abs_diff" in r else ""
        ok_q = r.get("quant_finite") and r.get("weight_layers") == r.get("torch_layers")
        quant = (f"{'yes' if ok_q else 'NO'} ({r['weight_layers']}/{len(r['float_layers'])})"
                 if "quant_finite" in r else "")
        lines.append(f"| {r['arch']} | {r['exporter']} | {r['opset']} ({r.get('file_opset')}) | {ok} | {diff} | {quant} "
                     f"| {', '.join(r.get('needed_help', [])) or '-'}{folded} |")
    return "\n".join(lines)


def _cell(r: dict) -> str:
    if "export_error" in r:
        return "export fails"
    if "import_error" in r:
        return "NO"
    ok = r.get("quant_finite") and r.get("weight_layers") == r.get("torch_layers") and r["rel_diff"] < 1e-4
    mark = "ok" if ok else "CHECK"
    mark += "" if r.get("file_opset") == r["opset"] else f" (file {r.get('file_opset')})"
    return mark + ("*" if r.get("export_note") else "")


def summary(rows: list[dict]) -> str:
    """Markdown: one line per architecture, one cell per exporter/opset."""
    keys = sorted({(r["exporter"], r["opset"]) for r in rows}, key=lambda k: (k[0] != "legacy", k[1]))
    head = "| architecture | " + " | ".join(f"{e} {o}" for e, o in keys) + " | max rel diff vs ORT | quantized layers |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = {(r["exporter"], r["opset"]): r for r in rows if r["arch"] == arch}
        diffs = [r["rel_diff"] for r in mine.values() if "rel_diff" in r]
        layers = sorted({f"{r['weight_layers']}/{r['torch_layers']}" for r in mine.values() if "weight_layers" in r})
        tail = f" | {max(diffs):.0e} | {', '.join(layers)} |" if diffs else " | | |"
        lines.append(f"| {arch} | " + " | ".join(_cell(mine[k]) if k in mine else "" for k in keys) + tail)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--opsets", default=",".join(map(str, OPSETS)))
    ap.add_argument("--exporters", default=",".join(EXPORTERS))
    ap.add_argument("--cache", default="/tmp/onnx-matrix")
    ap.add_argument("--out", default="onnx-matrix.md")
    ap.add_argument("--export-only", action="store_true", help="export and list operators; no import")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from onnx2torch.node_converters import registry

    snapshot = {tuple(k) for k in registry._CONVERTER_REGISTRY}  # before qcore registers anything
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows, models = [], {}
    for arch in args.archs.split(","):
        for exporter in args.exporters.split(","):
            for opset in map(int, args.opsets.split(",")):
                row = run_case(arch, exporter, opset, cache, snapshot, models, args.export_only)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    Path(args.out).write_text(summary(rows) + "\n\n" + table(rows) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

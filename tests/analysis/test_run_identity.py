"""Every run report holds one `RunIdentity` and one `LayerInventory`, built by the inputs and the sim, never
spread into the report from dicts; its JSON nests them under "identity" and "inventory"."""

from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import pytest

from qcore.analysis.reports import RunReport
from qcore.quant.inventory import FloatLayer, LayerInventory
from qcore.quant.qconfig import QuantConfig
from qcore.quant.quantsim import QuantSim
from qcore.zoo.report import RunIdentity
from tests.helpers import DEPLOY, STUDY, tiny_fashion_model

QCORE = Path(__file__).resolve().parents[2] / "qcore"
# the modules that define RunReport's subclasses (the AST walk below finds any new one)
REPORT_MODULES = ("qcore.analysis.reports", "qcore.runtime.reports", "qcore.train.qat.report", "qcore.workflow.report")


def _trees():
    return {p: ast.parse(p.read_text()) for p in sorted(QCORE.rglob("*.py"))}


def _run_report_classes() -> dict[str, type]:
    import importlib

    for name in REPORT_MODULES:
        importlib.import_module(name)
    out, todo = {}, [RunReport]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("qcore."):  # not a test's own subclass
                out[sub.__name__] = sub
            todo.append(sub)
    return out


def test_no_report_is_built_from_spread_dicts():
    classes = _run_report_classes()
    spread, missing = [], []
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            # `**inp.identity()`, `**sim.inventory()` anywhere: the shape this replaced
            for k in (k for k in node.keywords if k.arg is None):
                called = getattr(getattr(k.value, "func", None), "attr", "")
                if "identity" in called or "inventory" in called:
                    spread.append(f"{path.name}:{node.lineno} **{called}()")
            if name in classes and not {"identity", "inventory"} <= {k.arg for k in node.keywords}:  # by keyword
                missing.append(f"{path.name}:{node.lineno} {name}")
    assert not spread, spread
    assert not missing, missing


def test_every_run_report_subclass_carries_one_identity_and_one_inventory():
    classes = _run_report_classes()
    defined = {node.name for tree in _trees().values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
               and any(getattr(b, "id", None) in {"RunReport", *classes} for b in node.bases)}
    assert defined == set(classes) and len(classes) >= 7, (defined, set(classes))  # none escaped the import above
    for cls in classes.values():
        hints = typing.get_type_hints(cls)
        assert hints["identity"] is RunIdentity and hints["inventory"] is LayerInventory, cls
        flat = {"model_id", "seed", "calib_size", "isa", "scored_by", "quantized_layers", "float_layers"}
        assert not flat & set(hints), (cls, flat & set(hints))


def test_report_json_nests_the_identity_and_the_inventory():
    d = json.loads(DEPLOY.to_json())
    assert d["identity"] == {"model": "fm_resnet", "model_id": "abc123", "data": "fashion-mnist", "seed": 0,
                             "calib_size": 512, "isa": {}, "scored_by": "labels"}
    assert d["inventory"] == {"quantized_layers": ["stem.0", "fc"], "float_layers": []}
    assert not {"model", "model_id", "seed", "quantized_layers"} & set(d)
    assert "seed" not in STUDY.metrics() and "calib_size" not in STUDY.metrics()  # identity is not a result


def test_the_sim_lists_float_layers_as_typed_rows_and_the_inputs_name_the_weights():
    from qcore.zoo.inputs import prepare_inputs

    loaded = tiny_fashion_model()
    sim = QuantSim(loaded.module, QuantConfig().with_layer("5", weight_dtype="fp32"))
    inv = sim.layer_inventory()
    assert inv.quantized_layers == ("0",) and inv.float_layers == (FloatLayer("5", inv.float_layers[0].reason),)
    assert "fp32 weights by the configuration" == inv.float_layers[0].reason
    assert inv.to_dict() == {"quantized_layers": ["0"], "float_layers": [{"layer": "5", "reason": inv.float_layers[0].reason}]}
    who = prepare_inputs(loaded, "fashion-mnist", calib_size=16, eval_size=16, seed=3).run_identity()
    assert (who.model, who.data, who.seed, who.calib_size, who.scored_by) == ("tiny", "fashion-mnist", 3, 16, "labels")
    assert who.model_id == loaded.info["sha256"][:16] and "cpu_class" in who.isa
    with pytest.raises(AttributeError):
        who.seed = 4  # frozen: a report's identity is what ran, not something to edit afterwards

"""The SQLite history: records, filters, comparisons, exports, deletes, atomic and concurrent writes."""

from __future__ import annotations

import csv
from dataclasses import fields, replace
import io
import os
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qcore.store import history
from qcore.runtime.reports import DeployReport
from tests.helpers import DEPLOY, STUDY
from qcore.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_record_list_get_and_flattened_metrics(private_history):
    a = history.record(DEPLOY)
    b = history.record(STUDY)
    runs = history.list_runs()
    assert [r["id"] for r in runs] == [b, a]  # newest first
    dep = history.get_runs([a])[0]
    assert dep["model_id"] == "abc123" and dep["data_id"]["eval_size"] == 1000 and dep["data_id"]["seed"] == 0
    assert dep["metrics"]["int8_accuracy"] == 0.929 and dep["metrics"]["batch_1 ort_u8s8 ms"] == 0.75
    assert "random_weights" not in dep["metrics"] and dep["timings"] == {"seconds": 12.5}
    cal = history.get_runs([b])[0]
    assert cal["metrics"]["accuracy mse A4"] == 0.85 and cal["config"]["methods"] == ["max", "mse"]
    assert "sim" not in cal["details"] and "weights" not in cal["details"]  # bulky and live parts stay out
    assert [r["id"] for r in history.list_runs(kind="deploy")] == [a]
    assert [r["id"] for r in history.list_runs(model="gelu")] == [b]


def test_export_csv_and_json_and_delete(private_history):
    ids = [history.record(DEPLOY), history.record(STUDY)]
    runs = history.get_runs(ids)
    table = list(csv.DictReader(io.StringIO(history.to_csv(runs))))
    assert [int(r["id"]) for r in table] == ids
    assert table[0]["int8_accuracy"] == "0.929" and table[1]["accuracy max A8"] == "0.92"
    assert [r["id"] for r in json.loads(history.to_json(runs))] == ids
    assert history.delete_runs([ids[0]]) == 1
    assert [r["id"] for r in history.list_runs()] == [ids[1]]


def test_a_write_that_cannot_finish_leaves_nothing(private_history):
    with pytest.raises(TypeError):
        history.record(replace(DEPLOY, config={"bad": {1, 2}}))  # not JSON: fails before the transaction
    assert history.list_runs() == []
    # a process killed inside the transaction, after its INSERT, leaves nothing either
    code = (
        "import os, sys; from qcore.store import history;"
        "c = history._connect(); c.execute('BEGIN');"
        "c.execute(\"INSERT INTO runs (kind, created, model, model_id, data, data_id, config, metrics, timings, details)"
        " VALUES ('qat', 0, 'm', 'm', 'd', '{}', '{}', '{}', '{}', '{}')\");"
        "os._exit(1)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"QX_HISTORY_DB": str(private_history),
                                                                      "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert history.list_runs() == []
    history.record(DEPLOY)
    assert len(history.list_runs()) == 1


WRITER = """
import sys
from dataclasses import replace
from qcore.store import history
from tests.helpers import DEPLOY
n = int(sys.argv[1])
for i in range(int(sys.argv[2])):
    history.record(replace(DEPLOY, identity=replace(DEPLOY.identity, seed=n * 1000 + i)))
"""


def test_concurrent_writers_lose_nothing(private_history):
    """More writer processes than cores (2 here), each writing many runs as fast as it can, plus
    threads in this process: every run lands, none twice."""
    procs, runs = 6, 25
    env = {**os.environ, "QX_HISTORY_DB": str(private_history)}
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(n), str(runs)], cwd=ROOT, env=env,
                                 stderr=subprocess.PIPE, text=True) for n in range(procs)]
    errors = []

    def writer(n):
        try:
            for i in range(runs):
                history.record(replace(DEPLOY, identity=replace(DEPLOY.identity, seed=n * 1000 + i)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(procs, procs + 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for child in children:
        _, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-2000:]
    assert not errors
    seeds = sorted(r["data_id"]["seed"] for r in history.list_runs())
    assert seeds == sorted(n * 1000 + i for n in range(procs + 3) for i in range(runs))


def test_a_locked_database_is_waited_for_then_written(private_history, monkeypatch):
    """A writer that holds the lock longer than one busy timeout: the record retries and lands."""
    import sqlite3

    monkeypatch.setattr(history, "BUSY_TIMEOUT_S", 0.05)
    history.record(DEPLOY)  # the file exists, in WAL mode
    holder = sqlite3.connect(private_history, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    timer.start()
    try:
        history.record(replace(DEPLOY, identity=replace(DEPLOY.identity, seed=7)))
    finally:
        timer.join()
        holder.close()
    assert sorted(r["data_id"]["seed"] for r in history.list_runs()) == [0, 7]


def test_unwritable_history_keeps_the_run_and_says_why(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("QX_HISTORY_DB", str(blocker / "history.sqlite"))
    said = []
    assert history.remember(DEPLOY, say=said.append) is None
    assert said and "not saved to the history" in said[0]


class Training(DeployReport):
    kind = "training"


def test_unknown_kind_is_refused(private_history):
    with pytest.raises(ValueError, match="kind must be one of"):
        history.record(Training(**{f.name: getattr(DEPLOY, f.name) for f in fields(DEPLOY)}))


def test_history_cli_lists_compares_exports_deletes(private_history, capsys, tmp_path):
    a = history.record(DEPLOY)
    b = history.record(STUDY)
    assert main(["history"]) == 0
    out = capsys.readouterr().out
    assert "fm_resnet" in out and "fm_gelunet" in out and "2 run(s)" in out
    assert main(["history", "--kind", "deploy"]) == 0
    assert "fm_gelunet" not in capsys.readouterr().out
    assert main(["history", "--compare", f"{a},{b}"]) == 0
    assert "int8_accuracy" in capsys.readouterr().out
    assert main(["history", "--export", "csv", "--out", str(tmp_path / "runs.csv")]) == 0
    assert (tmp_path / "runs.csv").read_text().startswith("id,kind,time")
    assert main(["history", "--delete", str(a)]) == 0
    assert [r["id"] for r in history.list_runs()] == [b]
    assert main(["history", "--delete", "one,two"]) == 2
    assert "run ids are numbers" in capsys.readouterr().err


def test_report_json_is_strict_json_without_nan_or_infinity():
    report = replace(DEPLOY, logit_sqnr_db_vs_simulation=float("inf"), fp32_accuracy=float("nan"))
    data = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["logit_sqnr_db_vs_simulation"] is None and data["fp32_accuracy"] is None


# A deploy run as versions before `RunIdentity` stored it: identity and layer fields flat at the report's top.
LEGACY_DETAILS = {"model": "fm_resnet", "model_id": "abc123", "data": "fashion-mnist", "seed": 3, "calib_size": 256,
                  "isa": {"cpu_class": "AVX2 only (no VNNI)"}, "scored_by": "labels", "quantized_layers": ["stem.0"],
                  "float_layers": [{"layer": "fc", "reason": "fp32 weights by the configuration"}], "backend": "ort_u8s8"}


def test_a_run_stored_in_the_old_flat_shape_loads_in_todays_shape(private_history):
    row = ("deploy", 0.0, "fm_resnet", "abc123", "fashion-mnist", json.dumps({"seed": 3}), "{}",
           json.dumps({"int8_accuracy": 0.9}), "{}", json.dumps(LEGACY_DETAILS))
    old = history._with_connection(None, lambda conn: history._insert(conn, row))
    new = history.record(DEPLOY)
    legacy, today = history.get_runs([old, new])
    assert legacy["details"]["identity"] == {k: LEGACY_DETAILS[k] for k in history.LEGACY_IDENTITY}
    assert legacy["details"]["inventory"] == {"quantized_layers": ["stem.0"], "float_layers": LEGACY_DETAILS["float_layers"]}
    assert legacy["details"]["backend"] == "ort_u8s8" and "model_id" not in legacy["details"]
    assert not set(LEGACY_DETAILS) - {"backend"} & set(today["details"])  # nothing flat in a new run either
    assert today["details"]["identity"]["model_id"] == "abc123" and today["details"]["inventory"]["quantized_layers"] == ["stem.0", "fc"]
    assert history.nested_details(today["details"]) == today["details"]  # today's shape passes through as it is
    older = {k: v for k, v in LEGACY_DETAILS.items() if k not in ("scored_by", "float_layers")}  # before those fields
    assert history.nested_details(older)["identity"]["scored_by"] == "labels"
    assert history.nested_details(older)["inventory"]["float_layers"] == []
    assert "abc123" in history.to_json([legacy]) and history.flat_rows([legacy])[0]["seed"] == 3

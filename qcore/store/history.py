"""Experiment history: every calibration, sensitivity, deploy and QAT run, kept in one SQLite file.

A run is written once, when it has finished, as a single INSERT inside one transaction: a run
stopped halfway (cancelled, failed, the process killed) leaves nothing behind, and a reader never
sees half a record. Each call opens its own connection, so sessions and threads share the file
safely (SQLite serializes writers; WAL lets readers go on meanwhile).

A record holds the run's kind, time, the model's and the data's identity, its config, its scalar
metrics (flattened to `name -> number`, so runs compare side by side), its timings, and the report
itself without the bulky parts.
"""

from __future__ import annotations

import csv
import random
import io
import json
import os
import sqlite3
import time
from pathlib import Path

from qcore.quant.progress import Msg
from qcore.zoo.data import data_dir

__all__ = ["KINDS", "db_path", "record", "remember", "list_runs", "get_runs", "delete_runs", "flat_rows", "to_csv",
           "to_json", "nested_details"]

KINDS = ("calibration", "sensitivity", "deploy", "qat", "recovery", "workflow", "diagnosis")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    model_id TEXT NOT NULL,
    data TEXT,
    data_id TEXT,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    timings TEXT NOT NULL,
    details TEXT NOT NULL
)
"""
# report keys that are large (per-layer ranges, histograms, weights) or not data (live objects)
BULKY = {"sim", "prepared", "weights", "ranges", "layer_sqnr_db", "points", "losses", "int8_paths"}
# the fields a report kept flat at its top before it held them as "identity" and "inventory"
LEGACY_IDENTITY = ("model", "model_id", "data", "seed", "calib_size", "isa", "scored_by")
LEGACY_INVENTORY = ("quantized_layers", "float_layers")
COLUMNS = ("id", "kind", "created", "model", "model_id", "data", "data_id", "config", "metrics", "timings", "details")


def db_path() -> Path:
    """$QX_HISTORY_DB, else history.sqlite in the data directory."""
    return Path(os.environ.get("QX_HISTORY_DB") or data_dir() / "history.sqlite")


BUSY_TIMEOUT_S = 30.0  # how long one statement waits for another writer's lock
RETRIES = 8  # whole attempts on "database is locked", with exponential backoff and jitter


def _retrying(fn):
    """`fn()`, again after a short, growing, jittered pause while another writer holds the file
    ("database is locked" / "busy"): a slow machine with many writers must never lose a run."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if attempt == RETRIES - 1 or ("locked" not in text and "busy" not in text):
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _connect(path: Path | None = None) -> sqlite3.Connection:
    """A connection that waits for locks (busy_timeout) on a WAL-mode file with the schema in place.
    WAL lets readers go on while one writer commits; switching to it (once per file: the mode is
    stored in the file) and creating the table are writes too: callers go through `_with_connection`,
    which retries the whole operation."""
    path = Path(path or db_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    try:
        _set_up(conn)  # reads only, once the file is set up
    except BaseException:
        conn.close()
        raise
    return conn


def _with_connection(path: Path | None, fn):
    """`fn(connection)` on a fresh connection, closed afterwards; the whole of it retried while
    another writer holds the file (the one retry layer of this module)."""
    def attempt():
        conn = _connect(path)
        try:
            return fn(conn)
        finally:
            conn.close()

    return _retrying(attempt)


def _set_up(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(SCHEMA)


def record(report, model_id: str | None = None, data_id: dict | None = None, path: Path | None = None) -> int:
    """Store one finished run (a typed report: its `kind`, `to_dict()` and `metrics()`); returns its id.
    Everything is serialized before the transaction opens."""
    if report.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {report.kind!r}")
    d = report.to_dict()
    config = d.get("config") or {k: d[k] for k in ("weight_bits", "act_bits", "granularity", "symmetric", "methods",
                                                                  "weight_range")
                                 if k in d}
    who = report.identity
    data_identity = {"data": who.data, "calib_size": who.calib_size,
                     "eval_size": d.get("eval_size") or d.get("eval_images"), "seed": who.seed, **(data_id or {})}
    row = (
        report.kind, time.time(), str(who.model), str(model_id or who.model_id or who.model),
        str(who.data), json.dumps(data_identity, sort_keys=True), json.dumps(config, sort_keys=True),
        json.dumps(report.metrics(), allow_nan=True), json.dumps(report.timings()),
        json.dumps({k: v for k, v in d.items() if k not in BULKY}, default=lambda o: None),
    )
    return _with_connection(path, lambda conn: _insert(conn, row))


def _insert(conn: sqlite3.Connection, row: tuple) -> int:
    """One INSERT in one transaction that takes the write lock up front (BEGIN IMMEDIATE): committed
    whole or rolled back, never half a run."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(f"INSERT INTO runs ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' * 10)})", row)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(cur.lastrowid)


def remember(report, say=None) -> int | None:
    """`record`, but a history that cannot be written (read-only disk, locked file) never costs the
    user the run itself: it is reported through `say` and the run's result stands."""
    try:
        return record(report)
    except (sqlite3.Error, OSError) as exc:
        if say:
            say(Msg("not saved to the history ({path}): {reason}", path=str(db_path()), reason=str(exc)))
        return None


def _decode(r: tuple) -> dict:
    d = dict(zip(COLUMNS, r))
    for k in ("data_id", "config", "metrics", "timings", "details"):
        d[k] = json.loads(d[k]) if d[k] else {}
    d["details"] = nested_details(d["details"])
    return d


def nested_details(details: dict) -> dict:
    """A stored report in today's shape. Runs saved before reports carried a `RunIdentity` and a `LayerInventory`
    have their fields flat at the top (model, model_id, data, seed, calib_size, isa, scored_by, quantized_layers,
    float_layers): they are moved under "identity" and "inventory", so every reader sees one shape."""
    if "identity" in details or "model" not in details:
        return details
    out = {k: v for k, v in details.items() if k not in LEGACY_IDENTITY + LEGACY_INVENTORY}
    out["identity"] = {k: details.get(k) for k in LEGACY_IDENTITY}
    out["identity"]["scored_by"] = details.get("scored_by") or "labels"  # older than unlabeled images
    out["inventory"] = {k: details.get(k) or [] for k in LEGACY_INVENTORY}
    return out


def list_runs(kind: str | None = None, model: str | None = None, since: float | None = None,
              path: Path | None = None, with_details: bool = False) -> list[dict]:
    """Runs, newest first, filtered by kind, model name (substring) and time."""
    where, args = [], []
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if model:
        where.append("model LIKE ?")
        args.append(f"%{model}%")
    if since is not None:
        where.append("created >= ?")
        args.append(since)
    cols = COLUMNS if with_details else COLUMNS[:-1] + ("'{}'",)
    sql = f"SELECT {', '.join(cols)} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC"
    return [_decode(r) for r in _with_connection(path, lambda conn: conn.execute(sql, args).fetchall())]


def get_runs(ids: list[int], path: Path | None = None) -> list[dict]:
    """The runs with these ids, with their details, in the order asked."""
    if not ids:
        return []
    sql = f"SELECT {', '.join(COLUMNS)} FROM runs WHERE id IN ({', '.join('?' * len(ids))})"
    rows = _with_connection(path, lambda conn: conn.execute(sql, [int(i) for i in ids]).fetchall())
    by_id = {r[0]: _decode(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


def delete_runs(ids: list[int], path: Path | None = None) -> int:
    """Delete runs by id; returns how many were deleted."""
    if not ids:
        return 0
    sql = f"DELETE FROM runs WHERE id IN ({', '.join('?' * len(ids))})"  # one statement in autocommit: atomic
    return _with_connection(path, lambda conn: conn.execute(sql, [int(i) for i in ids]).rowcount)


def flat_rows(runs: list[dict]) -> list[dict]:
    """One flat dict per run: identity columns, then every metric and timing as its own column."""
    rows = []
    for r in runs:
        row = {"id": r["id"], "kind": r["kind"], "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])),
               "model": r["model"], "data": r["data"], "eval_size": r["data_id"].get("eval_size"),
               "seed": r["data_id"].get("seed")}
        row.update(r["metrics"])
        row.update({f"{k} (s)": v for k, v in r["timings"].items()})
        rows.append(row)
    return rows


def to_csv(runs: list[dict]) -> str:
    rows = flat_rows(runs)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(runs: list[dict]) -> str:
    return json.dumps(runs, indent=2)

"""The server's jobs in the history file: what was queued, ran, finished, failed, was cancelled or cut off.

Finished runs go into the `runs` table (qcore.store.history) whole, in one transaction; this table
says what happened to every job around them, so a server that was killed mid-job leaves a
consistent record: the runs already finished stay, and each job that was queued or running in the
dead process is marked "interrupted" by the next process that opens the log (`mark_interrupted`),
which the History page shows. A row names its server process (host, pid and the process's start
time, so a recycled pid is not mistaken for the old server).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qcore.store import history
from qcore.run.jobs import OPEN_STATES as OPEN
from qcore.run.jobs import JobStatus

__all__ = ["JobRecord", "JobLog", "server_id"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    model TEXT,
    sessions INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    server TEXT NOT NULL
)
"""
COLUMNS = ("id", "name", "model", "sessions", "status", "submitted", "started", "finished", "error", "server")
OPEN_STATES = tuple(s.value for s in OPEN)  # plain strings: written into SQL


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def server_id(pid: int | None = None) -> str:
    """host:pid:start-ticks of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _server_alive(server: str) -> bool:
    """Whether the process that wrote a row still runs (only a process on this host can be checked;
    another host's rows are left alone)."""
    host, pid, ticks = server.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    return _start_ticks(int(pid)) == ticks


@dataclass(frozen=True)
class JobRecord:
    """One job as the log keeps it."""

    id: str
    name: str
    model: str | None
    sessions: int
    status: str
    submitted: float
    started: float | None
    finished: float | None
    error: str | None
    server: str

    def to_dict(self) -> dict:
        return asdict(self)


class JobLog:
    """Rows of the `jobs` table; every call opens its own connection (history's retrying one)."""

    def __init__(self, path: Path | None = None):
        self._path = path

    def _run(self, sql: str, args: tuple = ()) -> list:
        def op(conn: sqlite3.Connection):
            conn.execute(SCHEMA)
            return conn.execute(sql, args).fetchall()

        return history._with_connection(self._path, op)

    def submitted(self, job_id: str, name: str, model: str | None, server: str | None = None) -> None:
        """A new job in the queue of `server` (this process by default)."""
        self._run(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                  (job_id, name, model, 1, JobStatus.QUEUED.value, time.time(), None, None, None, server or server_id()))

    def started(self, job_id: str) -> None:
        self._run("UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (time.time(), job_id))

    def joined(self, job_id: str, sessions: int) -> None:
        """Another session's identical request now shares this job: `sessions` sharing it now. Joins are logged
        outside the scheduler's lock, so two at once can arrive in either order: the count only ever rises (the
        classroom load test saw a job of six recorded as five)."""
        self._run("UPDATE jobs SET sessions = MAX(sessions, ?) WHERE id = ?", (sessions, job_id))

    def ended(self, job_id: str, status: str, error: str | None = None) -> None:
        self._run("UPDATE jobs SET status = ?, finished = ?, error = ? WHERE id = ?",
                  (JobStatus(status).value, time.time(), error, job_id))

    def mark_interrupted(self) -> int:
        """Mark the queued and running jobs of server processes that are gone as interrupted; returns how many."""
        rows = self._run(f"SELECT id, server FROM jobs WHERE status IN {OPEN_STATES}")
        gone = [job_id for job_id, server in rows if not _server_alive(server)]
        for job_id in gone:
            self._run("UPDATE jobs SET status = ?, finished = ?, error = 'the server stopped before the job ended' "
                      "WHERE id = ?", (JobStatus.INTERRUPTED.value, time.time(), job_id))
        return len(gone)

    def recent(self, limit: int = 200, status: tuple[str, ...] | None = None) -> list[JobRecord]:
        """The newest jobs first, optionally only those in the given states."""
        where = f" WHERE status IN ({', '.join('?' * len(status))})" if status else ""
        rows = self._run(f"SELECT {', '.join(COLUMNS)} FROM jobs{where} ORDER BY submitted DESC LIMIT ?",
                         (*(status or ()), int(limit)))
        return [JobRecord(*row) for row in rows]

"""The job table: one SQLite database per cluster, on the head node.

Agent commands (each its own short process), the daemon and job drivers all
use the table at once, so it runs in WAL mode with a busy timeout, every
change that reads before it writes happens in a ``BEGIN IMMEDIATE``
transaction, and every state change names the states it may leave: a job
cancelled by one process cannot be marked SUCCEEDED by another.

The ``settings`` table holds the autostop setting and the idle clock
(``last_active``), shared by the commands that reset it and the daemon
that acts on it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import layout

PENDING = "PENDING"
SETTING_UP = "SETTING_UP"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
FAILED_SETUP = "FAILED_SETUP"
CANCELLED = "CANCELLED"

#: a driver is working on the job
ACTIVE = (SETTING_UP, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, FAILED_SETUP, CANCELLED)

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    status TEXT NOT NULL,
    exit_code INTEGER,
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    has_setup INTEGER NOT NULL DEFAULT 0,
    driver_pid INTEGER,
    driver_boot TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
"""


class UnknownJob(Exception):
    """There is no job with this id on the cluster."""

    def __init__(self, job_id: int):
        super().__init__(f"no job {job_id} on this cluster")
        self.job_id = job_id


class Job:
    """One row of the job table.

    A plain class, not a dataclass: ``dataclasses`` costs milliseconds to
    import, and every job start pays the agent's import time.
    """

    __slots__ = ("id", "name", "status", "exit_code", "submitted_at", "started_at", "ended_at",
                 "has_setup", "driver_pid", "driver_boot")

    def __init__(self, id: int, name: str | None, status: str, exit_code: int | None,
                 submitted_at: float, started_at: float | None, ended_at: float | None,
                 has_setup: bool, driver_pid: int | None, driver_boot: str | None):
        self.id = id
        self.name = name
        self.status = status
        self.exit_code = exit_code
        self.submitted_at = submitted_at
        self.started_at = started_at
        self.ended_at = ended_at
        self.has_setup = has_setup
        self.driver_pid = driver_pid
        self.driver_boot = driver_boot

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status}>"

    def to_json(self) -> dict:
        """Return the job as the agent's commands print it."""
        return {"id": self.id, "name": self.name, "status": self.status,
                "exit_code": self.exit_code, "submitted_at": self.submitted_at,
                "started_at": self.started_at, "ended_at": self.ended_at}


_COLUMNS = ("id, name, status, exit_code, submitted_at, started_at, ended_at, has_setup, "
            "driver_pid, driver_boot")


def _job(row: tuple) -> Job:
    return Job(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), row[8], row[9])


def connect(path: Path | None = None) -> sqlite3.Connection:
    """Open the job table (creating it if needed) in autocommit mode."""
    if path is None:
        layout.ensure_state_dir()
        path = layout.db_file()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
        # Switching to WAL needs the database to ourselves; the busy timeout
        # waits for another process doing the same first-time set-up.
        conn.execute("PRAGMA journal_mode=WAL")
        with _write(conn):
            # Statement by statement: executescript() would commit our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
    # WAL with synchronous=NORMAL is durable across process crashes, which is
    # what matters here, and keeps each small write to one fsync at checkpoint.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in a write transaction taken up front (no lock upgrade deadlocks)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _touch(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('last_active', ?)", (repr(now),))


def add(conn: sqlite3.Connection, name: str | None, has_setup: bool,
        prepare: Callable[[int], None]) -> int:
    """Insert a PENDING job and return its id.

    ``prepare(job_id)`` writes the job's files; it runs inside the
    transaction, so the daemon never sees the job before its files exist
    and a failure leaves no job behind.
    """
    now = time.time()
    with _write(conn):
        cur = conn.execute("INSERT INTO jobs(name, status, submitted_at, has_setup) VALUES (?, ?, ?, ?)",
                           (name, PENDING, now, int(has_setup)))
        job_id = int(cur.lastrowid)
        prepare(job_id)
        _touch(conn, now)
    return job_id


def get(conn: sqlite3.Connection, job_id: int) -> Job:
    """Return job ``job_id`` or raise :class:`UnknownJob`."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise UnknownJob(job_id)
    return _job(row)


def list_jobs(conn: sqlite3.Connection, statuses: Iterable[str] | None = None) -> list[Job]:
    """Return the jobs, newest first, optionally only those in ``statuses``."""
    if statuses is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC").fetchall()
    else:
        statuses = tuple(statuses)
        marks = ",".join("?" * len(statuses))
        rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY id DESC",
                            statuses).fetchall()
    return [_job(r) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Return how many jobs are in each status."""
    return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


def claim_next(conn: sqlite3.Connection, admit: Callable[[Job], bool] | None = None) -> Job | None:
    """Move the oldest PENDING job to SETTING_UP (or RUNNING when it has no setup) and return it.

    ``admit(job)`` may keep the oldest job waiting (its accelerators are in
    use); then nothing is claimed, so jobs still start in submission order.
    """
    now = time.time()
    with _write(conn):
        row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY id LIMIT 1",
                           (PENDING,)).fetchone()
        if row is None:
            return None
        job = _job(row)
        if admit is not None and not admit(job):
            return None
        status = SETTING_UP if job.has_setup else RUNNING
        conn.execute("UPDATE jobs SET status = ?, started_at = ? WHERE id = ?", (status, now, job.id))
    return get(conn, job.id)


def set_driver(conn: sqlite3.Connection, job_id: int, pid: int, boot: str) -> None:
    """Record the pid of the process driving the job (so a cancel can kill it)."""
    conn.execute("UPDATE jobs SET driver_pid = ?, driver_boot = ? WHERE id = ?", (pid, boot, job_id))


def advance(conn: sqlite3.Connection, job_id: int, old: str, new: str) -> bool:
    """Move the job from ``old`` to ``new``; False if it was no longer ``old`` (e.g. cancelled)."""
    cur = conn.execute("UPDATE jobs SET status = ? WHERE id = ? AND status = ?", (new, job_id, old))
    return cur.rowcount == 1


def finish(conn: sqlite3.Connection, job_id: int, status: str, exit_code: int | None) -> bool:
    """End a job that has not ended yet; False if it already had (a cancel got there first)."""
    assert status in TERMINAL
    now = time.time()
    marks = ",".join("?" * len(TERMINAL))
    with _write(conn):
        cur = conn.execute(f"UPDATE jobs SET status = ?, exit_code = ?, ended_at = ? "
                           f"WHERE id = ? AND status NOT IN ({marks})",
                           (status, exit_code, now, job_id, *TERMINAL))
        if cur.rowcount:
            _touch(conn, now)
    return cur.rowcount == 1


def end_all(conn: sqlite3.Connection, job_ids: Iterable[int] | None, from_statuses: Iterable[str],
            status: str) -> list[Job]:
    """End every job in ``from_statuses`` (among ``job_ids``; None: all) with ``status``.

    Returns the jobs as they were before, so the caller can stop the ones
    that were running. ``exit_code`` is left null: nothing exited.
    """
    assert status in TERMINAL
    now = time.time()
    from_statuses = tuple(from_statuses)
    marks = ",".join("?" * len(from_statuses))
    with _write(conn):
        rows = [_job(r) for r in conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY id", from_statuses)]
        if job_ids is not None:
            wanted = set(job_ids)
            rows = [j for j in rows if j.id in wanted]
        for job in rows:
            conn.execute("UPDATE jobs SET status = ?, ended_at = ? WHERE id = ?", (status, now, job.id))
        if rows:
            _touch(conn, now)
    return rows


def last_active(conn: sqlite3.Connection) -> float:
    """Return when the idle clock was last reset (0 if never)."""
    row = conn.execute("SELECT value FROM settings WHERE key = 'last_active'").fetchone()
    return float(row[0]) if row else 0.0


def touch(conn: sqlite3.Connection) -> None:
    """Reset the idle clock."""
    _touch(conn, time.time())


def get_autostop(conn: sqlite3.Connection) -> tuple[float | None, bool]:
    """Return ``(idle_minutes or None when off, down)``."""
    values = dict(conn.execute(
        "SELECT key, value FROM settings WHERE key IN ('autostop_idle_minutes', 'autostop_down')"))
    idle = values.get("autostop_idle_minutes")
    return (float(idle) if idle else None), values.get("autostop_down") == "1"


def set_autostop(conn: sqlite3.Connection, idle_minutes: float | None, down: bool) -> None:
    """Set (or, with None, cancel) autostop, and reset the idle clock."""
    with _write(conn):
        conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('autostop_idle_minutes', ?)",
                     ("" if idle_minutes is None else repr(float(idle_minutes)),))
        conn.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('autostop_down', ?)",
                     ("1" if down and idle_minutes is not None else "0",))
        _touch(conn, time.time())

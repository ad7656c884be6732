"""Managed jobs in the state database (the ``managed_jobs`` table).

Reading it needs nothing but SQLite and JSON, so ``skyk jobs queue`` stays
fast. The controller changes a job's status only through :func:`update`,
which never overwrites a cancellation: a job the user cancelled cannot be
marked RUNNING or SUCCEEDED by a controller thread that finished its work a
moment later.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from skyk.state import rows
from skyk.state.db import transaction

# States, as SkyPilot names them.
PENDING = "PENDING"
STARTING = "STARTING"
RUNNING = "RUNNING"
RECOVERING = "RECOVERING"
CANCELLING = "CANCELLING"
SUCCEEDED = "SUCCEEDED"
CANCELLED = "CANCELLED"
FAILED = "FAILED"
FAILED_SETUP = "FAILED_SETUP"
FAILED_PRECHECKS = "FAILED_PRECHECKS"
FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"
FAILED_CONTROLLER = "FAILED_CONTROLLER"
#: a row that does not hold what skyk wrote (never stored; its note says why)
DAMAGED = "DAMAGED"

#: states a job leaves only for another
UNFINISHED = (PENDING, STARTING, RUNNING, RECOVERING, CANCELLING)
#: states a job never leaves
TERMINAL = (SUCCEEDED, CANCELLED, FAILED, FAILED_SETUP, FAILED_PRECHECKS, FAILED_NO_RESOURCE,
            FAILED_CONTROLLER)


@dataclass(frozen=True)
class JobRecord:
    """A managed job: its tasks, where it runs now and how it has gone so far."""

    id: int
    name: str | None
    #: each task's mapping, in pipeline order (local paths already absolute)
    tasks: list
    #: resource fields set by ``jobs launch`` flags (``--gpus`` ...), applied to every task
    override: dict
    strategy: str
    #: what the job asks for, as ``jobs queue`` shows it
    resources: str
    status: str
    task_index: int
    #: the cluster the job owns now (made, being made, or to tear down)
    cluster: str | None
    #: the job's id in its cluster's agent
    agent_job: int | None
    #: launches so far, over all tasks
    attempt: int
    #: where the current task's cluster runs: {"cloud", "region", "zone"}
    placement: dict | None
    #: where a preemption took the nodes, while the job recovers from it
    lost: dict | None
    recoveries: int
    error_restarts: int
    submitted_at: float
    started_at: float | None
    #: when the current RUNNING stretch began
    run_since: float | None
    #: seconds RUNNING in stretches that ended
    run_seconds: float
    ended_at: float | None
    #: since when no place could take the job (None: not waiting for resources)
    waiting_since: float | None
    #: since when its agent has not answered (None: it answers)
    unreachable_since: float | None
    #: bytes of the current attempt's log already copied to the job's log
    log_offset: int
    cancel_requested: bool
    note: str | None

    @property
    def finished(self) -> bool:
        """Whether the job has reached a state it never leaves."""
        return self.status in TERMINAL

    def job_seconds(self, now: float) -> float:
        """Seconds the job's run has been RUNNING, over all its attempts."""
        return self.run_seconds + (now - self.run_since if self.run_since is not None else 0.0)

    def total_seconds(self, now: float) -> float:
        """Seconds from submission to the end (or now)."""
        return (self.ended_at if self.ended_at is not None else now) - self.submitted_at


def _record(row: sqlite3.Row) -> JobRecord:
    try:
        return JobRecord(
            id=rows.value(row, "id", int), name=rows.value(row, "name", str, optional=True),
            tasks=rows.decoded(row, "tasks", _task_list), override=rows.decoded(row, "override", _mapping),
            strategy=rows.value(row, "strategy", str), resources=rows.value(row, "resources", str),
            status=_status(row), task_index=rows.value(row, "task_index", int),
            cluster=rows.value(row, "cluster", str, optional=True),
            agent_job=rows.value(row, "agent_job", int, optional=True),
            attempt=rows.value(row, "attempt", int),
            placement=rows.decoded(row, "placement", _mapping, optional=True),
            lost=rows.decoded(row, "lost", _mapping, optional=True),
            recoveries=rows.value(row, "recoveries", int), error_restarts=rows.value(row, "error_restarts", int),
            submitted_at=rows.value(row, "submitted_at", float, int),
            started_at=rows.value(row, "started_at", float, int, optional=True),
            run_since=rows.value(row, "run_since", float, int, optional=True),
            run_seconds=rows.value(row, "run_seconds", float, int),
            ended_at=rows.value(row, "ended_at", float, int, optional=True),
            waiting_since=rows.value(row, "waiting_since", float, int, optional=True),
            unreachable_since=rows.value(row, "unreachable_since", float, int, optional=True),
            log_offset=rows.value(row, "log_offset", int),
            cancel_requested=bool(rows.value(row, "cancel_requested", int)),
            note=rows.value(row, "note", str, optional=True))
    except rows.DamagedRow as exc:
        # Listed (so the user sees it) but never acted on.
        return JobRecord(id=int(row["id"]) if isinstance(row["id"], int) else 0, name=None, tasks=[],
                         override={}, strategy="", resources="-", status=DAMAGED, task_index=0,
                         cluster=row["cluster"] if isinstance(row["cluster"], str) else None, agent_job=None,
                         attempt=0, placement=None, lost=None, recoveries=0, error_restarts=0,
                         submitted_at=0.0, started_at=None, run_since=None, run_seconds=0.0, ended_at=None,
                         waiting_since=None, unreachable_since=None, log_offset=0, cancel_requested=False,
                         note=f"record damaged: {exc}")


def _status(row: sqlite3.Row) -> str:
    status = rows.value(row, "status", str)
    if status not in UNFINISHED + TERMINAL:
        raise rows.DamagedRow(f"status is {status[:40]!r}, not a managed job state")
    return status


def _mapping(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return value


def _task_list(text: str) -> list:
    value = json.loads(text)
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        raise ValueError("not a list of task mappings")
    return value


def add(conn: sqlite3.Connection, name: str | None, tasks: list[dict], override: dict, strategy: str,
        resources: str) -> int:
    """Record a new PENDING job; return its id (ids only grow, and are never reused)."""
    with transaction(conn):
        cursor = conn.execute(
            "INSERT INTO managed_jobs (name, tasks, override, strategy, resources, status, submitted_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, json.dumps(tasks), json.dumps(override), strategy, resources, PENDING, time.time()))
        return int(cursor.lastrowid)


def get(conn: sqlite3.Connection, job_id: int) -> JobRecord | None:
    """Return job ``job_id``, or None."""
    row = conn.execute("SELECT * FROM managed_jobs WHERE id = ?", (job_id,)).fetchone()
    return _record(row) if row else None


def list_jobs(conn: sqlite3.Connection, unfinished_only: bool = False) -> list[JobRecord]:
    """Return jobs, newest first; only those still running their course with ``unfinished_only``."""
    if unfinished_only:
        marks = ", ".join("?" * len(UNFINISHED))
        found = conn.execute(f"SELECT * FROM managed_jobs WHERE status IN ({marks}) ORDER BY id DESC",
                             UNFINISHED).fetchall()
    else:
        found = conn.execute("SELECT * FROM managed_jobs ORDER BY id DESC").fetchall()
    return [_record(r) for r in found]


def update(conn: sqlite3.Connection, job_id: int, **fields) -> bool:
    """Set a job's fields (dicts as JSON) in one transaction; return whether the status was taken.

    Once a cancellation is asked for, only CANCELLING and CANCELLED may be
    set as the status, and a finished job's status never changes: a status
    refused here leaves the other fields set all the same.
    """
    status = fields.pop("status", None)
    values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()}
    with transaction(conn):
        row = conn.execute("SELECT status, cancel_requested FROM managed_jobs WHERE id = ?",
                           (job_id,)).fetchone()
        if row is None:
            return False
        taken = status is not None and row["status"] not in TERMINAL and (
            not row["cancel_requested"] or status in (CANCELLING, CANCELLED))
        if taken:
            values["status"] = status
            if status in TERMINAL:
                values.setdefault("ended_at", time.time())
        if values:
            conn.execute(f"UPDATE managed_jobs SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                         (*values.values(), job_id))
        return taken


def request_cancel(conn: sqlite3.Connection, job_id: int) -> str | None:
    """Ask for job ``job_id`` to be cancelled; return its status before (None: no such job).

    Idempotent: a finished job is left as it is, and asking again changes nothing.
    """
    with transaction(conn):
        row = conn.execute("SELECT status FROM managed_jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        if row["status"] in UNFINISHED:
            conn.execute("UPDATE managed_jobs SET cancel_requested = 1, status = ? WHERE id = ?",
                         (CANCELLING, job_id))
        return row["status"]

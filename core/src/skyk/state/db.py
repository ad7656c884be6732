"""The state database: one SQLite file under ``SKYK_HOME``, versioned, safe across processes.

Many ``skyk`` processes may use it at once (parallel launches, an agent's
autostop calling back into the CLI), so it runs in WAL mode with a generous
busy timeout, and every write is one short ``BEGIN IMMEDIATE`` transaction.
Rows hold JSON text, never pickles, so any version of skyk can read them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from skyk.catalog.store import private_home, skyk_home
from skyk.envvars import seconds
from skyk.errors import SkykError

#: Seconds to wait for another process's write before giving up on the database.
LOCK_TIMEOUT_ENV = "SKYK_STATE_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 30.0

#: Each entry upgrades the schema by one version; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE clusters (
        name TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        handle TEXT,
        launched_at REAL NOT NULL,
        status_at REAL NOT NULL,
        autostop_minutes REAL,
        autostop_down INTEGER NOT NULL DEFAULT 0,
        owner_pid INTEGER,
        note TEXT
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster TEXT NOT NULL,
        uid TEXT NOT NULL,
        infra TEXT NOT NULL,
        resources TEXT NOT NULL,
        num_nodes INTEGER NOT NULL,
        hourly_price REAL NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL
    );
    CREATE INDEX usage_cluster ON usage (cluster, ended_at);
    """,
    """
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        task TEXT NOT NULL,
        created_at REAL NOT NULL,
        controller_pid INTEGER,
        controller_port INTEGER,
        router_pid INTEGER,
        router_port INTEGER,
        note TEXT
    );
    CREATE TABLE replicas (
        service TEXT NOT NULL,
        id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        cluster TEXT NOT NULL,
        status TEXT NOT NULL,
        url TEXT,
        launched_at REAL NOT NULL,
        status_at REAL NOT NULL,
        probe_failures INTEGER NOT NULL DEFAULT 0,
        note TEXT,
        PRIMARY KEY (service, id)
    );
    """,
    """
    CREATE TABLE service_versions (
        service TEXT NOT NULL,
        version INTEGER NOT NULL,
        task TEXT NOT NULL,
        mode TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (service, version)
    );
    INSERT INTO service_versions (service, version, task, mode, created_at)
        SELECT name, version, task, 'rolling', created_at FROM services;
    ALTER TABLE replicas ADD COLUMN spot INTEGER NOT NULL DEFAULT 0;
    """,
    # The address the endpoint is published on besides loopback (NULL: 127.0.0.1 only).
    "ALTER TABLE services ADD COLUMN router_host TEXT;",
    # Each request to a cloud for nodes, written before the cloud is asked, so
    # what a killed launch made can be found and removed (dropped once settled).
    """
    CREATE TABLE attempts (
        cluster TEXT NOT NULL,
        uid TEXT NOT NULL,
        cloud TEXT NOT NULL,
        region TEXT NOT NULL,
        zone TEXT,
        started_at REAL NOT NULL,
        PRIMARY KEY (cluster, uid)
    );
    """,
    # Buckets skyk made (and deletes with 'storage delete', or with the cluster
    # named here when not persistent), and the buckets each cluster mounts
    # (mounted again when it starts).
    """
    CREATE TABLE storage (
        store TEXT NOT NULL,
        name TEXT NOT NULL,
        source TEXT,
        region TEXT,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        persistent INTEGER NOT NULL,
        cluster TEXT,
        PRIMARY KEY (store, name)
    );
    CREATE TABLE cluster_mounts (
        cluster TEXT NOT NULL,
        dest TEXT NOT NULL,
        store TEXT NOT NULL,
        bucket TEXT NOT NULL,
        prefix TEXT NOT NULL,
        mode TEXT NOT NULL,
        PRIMARY KEY (cluster, dest)
    );
    """,
    # Managed jobs (skyk jobs): each a pipeline of tasks that the jobs
    # controller sees through; ``cluster`` names the cluster it owns now.
    """
    CREATE TABLE managed_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,
        tasks TEXT NOT NULL,
        override TEXT NOT NULL,
        strategy TEXT NOT NULL,
        resources TEXT NOT NULL,
        status TEXT NOT NULL,
        task_index INTEGER NOT NULL DEFAULT 0,
        cluster TEXT,
        agent_job INTEGER,
        attempt INTEGER NOT NULL DEFAULT 0,
        placement TEXT,
        lost TEXT,
        recoveries INTEGER NOT NULL DEFAULT 0,
        error_restarts INTEGER NOT NULL DEFAULT 0,
        submitted_at REAL NOT NULL,
        started_at REAL,
        run_since REAL,
        run_seconds REAL NOT NULL DEFAULT 0,
        ended_at REAL,
        waiting_since REAL,
        unreachable_since REAL,
        log_offset INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        note TEXT
    );
    CREATE INDEX managed_jobs_status ON managed_jobs (status);
    CREATE INDEX managed_jobs_cluster ON managed_jobs (cluster);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def state_path() -> Path:
    """Return the state database's path."""
    return skyk_home() / "state.db"


def connect() -> sqlite3.Connection:
    """Open the state database, creating (private, 0600) or upgrading its schema as needed."""
    private_home()
    path = state_path()
    _refuse_emptied(path)
    try:
        # Created here, not by SQLite, to set its mode: it holds service secrets.
        # SQLite gives its -wal and -shm files the database's mode. O_EXCL: never
        # open (and close) a database this process may have open, as closing any
        # descriptor of a file drops the process's POSIX locks on it.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        _narrow(path)
    except OSError as exc:
        raise SkykError(f"cannot open state database {path}: {exc.strerror}",
                        hint="check that SKYK_HOME and the file in it are yours and writable") from None
    try:
        conn = sqlite3.connect(path, timeout=lock_timeout(), isolation_level=None)
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            _migrate(conn, version)
    except sqlite3.Error as exc:
        raise state_error(exc) from None
    return conn


def _narrow(path: Path) -> None:
    """Make an existing database private again (0600), as it holds service secrets.

    An older skyk created it with the user's umask, or someone widened it by
    hand. Best effort: a database someone else owns is reported when opened.
    """
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def lock_timeout() -> float:
    """Seconds a command waits for another one's write to the database (``SKYK_STATE_LOCK_TIMEOUT``)."""
    return seconds(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT)


def _refuse_emptied(path: Path) -> None:
    """Refuse an empty database while nodes skyk made exist: it lost its clusters, it is not new.

    SQLite would take a 0-byte file for a new database, and skyk would
    silently forget the clusters whose sandboxes (and processes) still run.
    """
    try:
        empty = path.stat().st_size == 0
    except FileNotFoundError:
        return
    sandboxes = path.parent / "local"  # the local cloud's node directories
    if empty and sandboxes.is_dir() and any(p.is_dir() for p in sandboxes.iterdir()):
        raise SkykError(f"state database {path} is empty, but clusters made by skyk still exist in"
                        f" {sandboxes}", hint="restore state.db from a backup; or, to start afresh, delete"
                        f" it and {sandboxes} once no node process runs")


def state_error(exc: sqlite3.Error) -> SkykError:
    """Turn an error from the state database into one line that says what is wrong with it."""
    path = state_path()
    text = str(exc)
    # SQLite needs to write beside the database (its -wal and -shm files) even to read it.
    if "readonly" in text or not all(os.access(p, os.W_OK) for p in (path, path.parent) if p.exists()):
        return SkykError(f"state database {path} is read-only",
                         hint=f"make it and {path.parent} writable by you")
    if "locked" in text or "busy" in text:
        return SkykError(f"state database {path} stayed locked by another process for"
                         f" {lock_timeout():g}s", hint="wait for the other skyk command to finish"
                         f" ('fuser {path}' names it), or raise {LOCK_TIMEOUT_ENV}")
    if "no such" in text or "mismatch" in text:  # a dropped table or column, a wrongly typed value
        return SkykError(f"state database {path} is damaged: {text}",
                         hint="restore it from a backup, or move it aside to start afresh"
                              " (skyk will then forget its clusters)")
    return SkykError(f"state database {path} is unusable: {text}",
                     hint="move it aside to start afresh (skyk will then forget its clusters)")


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SkykError(f"state database {state_path()} has schema version {version}, newer than"
                        f" this skyk understands ({SCHEMA_VERSION})", hint="upgrade skyk")
    _use_wal(conn)
    with transaction(conn):
        # Another process may have migrated while we waited for the lock.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for script in MIGRATIONS[version:]:
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL, waiting for other processes doing the same.

    The switch needs the database to itself, and two processes asking at once
    can each hold what the other waits for: SQLite then fails one of them at
    once, without its busy timeout. So a busy answer is retried until the
    lock timeout, as any other wait for the database.
    """
    deadline = time.monotonic() + lock_timeout()
    pause = 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block as one write transaction, taking the write lock up front.

    BEGIN is inside the ``try``: a Ctrl-C that arrives while BEGIN runs is
    raised the moment it returns, and the transaction it opened must still be
    rolled back, or its write lock would outlive it and stall every other
    skyk process (and this one) for the busy timeout.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

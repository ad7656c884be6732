"""The state database: one SQLite file under ``SKYK_HOME``, versioned, safe across processes.

Many ``skyk`` processes may use it at once (parallel launches, an agent's
autostop calling back into the CLI), so it runs in WAL mode with a generous
busy timeout, and every write is one short ``BEGIN IMMEDIATE`` transaction.
Rows hold JSON text, never pickles, so any version of skyk can read them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from skyk.catalog.store import skyk_home
from skyk.errors import SkykError

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
)

SCHEMA_VERSION = len(MIGRATIONS)


def state_path() -> Path:
    """Return the state database's path."""
    return skyk_home() / "state.db"


def connect() -> sqlite3.Connection:
    """Open the state database, creating or upgrading its schema as needed."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            _migrate(conn, version)
    except sqlite3.DatabaseError as exc:
        raise SkykError(f"state database {path} is unusable: {exc}",
                        hint="move it aside to start afresh (skyk will then forget its clusters)") from None
    return conn


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SkykError(f"state database {state_path()} has schema version {version}, newer than"
                        f" this skyk understands ({SCHEMA_VERSION})", hint="upgrade skyk")
    conn.execute("PRAGMA journal_mode=WAL")
    with transaction(conn):
        # Another process may have migrated while we waited for the lock.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for script in MIGRATIONS[version:]:
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block as one write transaction, taking the write lock up front."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

"""Fixtures that run real servers on loopback: fake replicas and a gunicorn router.

Every process a fixture starts is stopped in a ``finally`` block, so a failing
test leaves nothing running.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from router_servers import (
    FakeReplica,
    RunningRouter,
    start_fake_openai,
    start_fake_replica,
    start_router,
    stop,
)


@pytest.fixture(scope="module")
def replicas() -> Iterator[dict[str, FakeReplica]]:
    """Two fake replicas, ``a`` and ``b``."""
    started: list[FakeReplica] = []
    try:
        for name in ("a", "b"):
            started.append(start_fake_replica(name))
        yield {replica.name: replica for replica in started}
    finally:
        for replica in started:
            stop(replica.proc)


@pytest.fixture(scope="module")
def router(tmp_path_factory) -> Iterator[RunningRouter]:
    """A router with two workers, shared by a module's tests (each sets its replicas)."""
    running = start_router(tmp_path_factory.mktemp("router"))
    try:
        yield running
    finally:
        stop(running.proc)


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    """``fake_openai.py`` streaming an event every 50 ms; yields its base URL."""
    server = start_fake_openai(event_interval_s=0.05)
    try:
        yield server.url
    finally:
        stop(server.proc)

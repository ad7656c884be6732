"""Helpers for the ``skyk serve`` tests: service tasks, state reads and a steady load generator."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lifecycle_helpers import wait_for

#: Marks tests that serve through the router: skipped where skyk-router is not installed.
needs_router = pytest.mark.skipif(importlib.util.find_spec("skyk_router") is None,
                                  reason="skyk-router is not installed")

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
REPO = Path(__file__).resolve().parents[1]
#: The no-GPU chat recipe: two replicas of examples/tiny_chat_server.py.
CPU_CHAT_TASK = REPO / "examples" / "serve-cpu-chat.yaml"


def engine_task(service: str, version: int = 1, resources: str = "ports: 8080", **env: str) -> str:
    """A task serving :mod:`fake_engine` on port 8080 with the given ``service:`` body."""
    envs = "".join(f"  {key}: '{value}'\n" for key, value in {"VERSION": str(version), **env}.items())
    return (f"service:\n{service}\nresources:\n  {resources}\nenvs:\n{envs}"
            f"run: exec python3 {FAKE_ENGINE} 8080\n")


def serve_json(skyk) -> list[dict]:
    """``skyk serve status -o json``."""
    result = skyk("serve", "status", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def service_json(skyk, name: str) -> dict:
    """One service from ``skyk serve status -o json``."""
    [service] = [s for s in serve_json(skyk) if s["name"] == name]
    return service


def ready_replicas(skyk, name: str) -> list[dict]:
    """The READY replicas of service ``name``."""
    return [r for r in service_json(skyk, name)["replicas"] if r["status"] == "READY"]


def wait_ready(skyk, name: str, count: int, timeout: float = 90, **match) -> list[dict]:
    """Wait until exactly ``count`` replicas are READY (and no other is alive) with the given fields.

    Failed replicas, which ``serve status`` keeps showing once torn down, do not count.
    """
    from skyk.serve.state import DOOMED

    def check():
        replicas = [r for r in service_json(skyk, name)["replicas"] if r["status"] not in DOOMED]
        ready = [r for r in replicas if r["status"] == "READY"]
        if len(replicas) == len(ready) == count and all(r[k] == v for r in ready for k, v in match.items()):
            return ready
        return None

    return wait_for(check, timeout=timeout, interval=0.3, what=f"{count} READY replicas of {name} ({match})")


def service_row(home: Path, name: str) -> sqlite3.Row:
    """The service's row in the state database (controller pid and port, router port)."""
    with sqlite3.connect(home / ".skyk" / "state.db") as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()


def published_urls(home: Path, name: str) -> list[str]:
    """The replica URLs the controller currently gives the router."""
    port = service_row(home, name)["controller_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/replicas", timeout=5) as response:
        return [r["url"] for r in json.load(response)["replicas"]]


def get(url: str, timeout: float = 10, **headers: str) -> str:
    """GET ``url`` and return the body as text."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        # The same error, with the router's hint in its message; the body stays readable.
        body = exc.read()
        raise urllib.error.HTTPError(exc.url, exc.code, f"{exc.msg}: {body[:300].decode(errors='replace')}",
                                     exc.headers, io.BytesIO(body)) from None


@dataclass(frozen=True)
class Outcome:
    """One request of a :class:`SteadyLoad`."""

    started: float
    ended: float
    body: str | None
    error: str | None


class SteadyLoad:
    """Requests through an endpoint from a few threads (back to back by default), every outcome recorded."""

    def __init__(self, url: str, threads: int = 4, interval: float = 0.0) -> None:
        self.url = url
        self.interval = interval  # pause between one thread's requests
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            try:
                body, error = get(self.url), None
            except urllib.error.HTTPError as exc:
                body, error = None, f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except OSError as exc:
                body, error = None, repr(exc)
            self.outcomes.append(Outcome(started, time.time(), body, error))
            self._stop.wait(self.interval)

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def failures(self, after: float = 0.0) -> list[Outcome]:
        """Failed requests that started at or after ``after`` (epoch seconds)."""
        return [o for o in self.outcomes if o.error and o.started >= after]

    def bodies(self, after: float = 0.0) -> set[str]:
        """Distinct answers to requests that started at or after ``after``."""
        return {o.body for o in self.outcomes if o.body and o.started >= after}

    def wait_count(self, count: int, timeout: float = 30) -> None:
        """Wait until at least ``count`` more requests have finished."""
        goal = len(self.outcomes) + count
        wait_for(lambda: len(self.outcomes) >= goal, timeout=timeout, interval=0.05, what=f"{count} requests")


def endpoint_host() -> str:
    """The address a service's endpoint is published on here: the local bridge's when nodes
    get their own network namespaces (so they reach it), else 127.0.0.1."""
    from lifecycle_helpers import netns_available
    from skyk.builtin.local_network import bridge_subnet, gateway

    return gateway(bridge_subnet()) if netns_available() else "127.0.0.1"


def service_processes(home: Path, name: str, endpoint: str) -> list[str]:
    """Command lines of live controllers of ``name`` and routers on ``endpoint`` made under ``home``.

    Only processes whose ``SKYK_HOME`` is this test's count: tests running
    beside it (another checkout, another session) may serve a service of the
    same name.
    """
    from lifecycle_helpers import cmdlines

    marker = f"SKYK_HOME={home / '.skyk'}".encode()
    port = endpoint.rsplit(":", 1)[1]
    mine = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                mine.append(entry.name)
        except OSError:  # gone, or not ours to read
            continue
    # skyk-router (--port) execs gunicorn (--bind), whose workers share its command line.
    return [c for c in cmdlines(mine) if f"skyk.serve.controller {name}" in c
            or f"--port {port} " in c + " " or f"--bind {endpoint} " in c + " "]


def assert_nothing_left(skyk, home: Path, name: str, endpoint: str) -> None:
    """After ``serve down``: no service, no node process or sandbox, no controller or router."""
    from lifecycle_helpers import node_processes, sandboxes

    assert [s for s in serve_json(skyk) if s["name"] == name] == []
    assert node_processes() == {} and sandboxes(home) == []
    left = service_processes(home, name, endpoint)
    assert not left, left


def wait_serving(endpoint: str, expected: set[str], path: str = "/") -> None:
    """Wait until requests through ``endpoint`` are answered by exactly the ``expected`` bodies.

    The router learns ready replicas by polling the controller, so it may lag
    ``serve status`` by a moment.
    """
    def check() -> bool:
        try:
            return {get(f"http://{endpoint}{path}") for _ in range(8 * len(expected))} == expected
        except OSError:
            return False

    wait_for(check, timeout=30, interval=0.2, what=f"the endpoint to reach {sorted(expected)}")

@contextlib.contextmanager
def running_service(skyk, home: Path, name: str, task: Path, *args: str,
                    replicas: int, ready_path: str = "/v1/models") -> Iterator[str]:
    """``skyk serve up`` ``task`` as ``name``; yield its endpoint once it answers ``ready_path``.

    Run from the repository root, as the examples' relative paths expect.
    Afterwards (even after a failure) ``serve down`` and check that nothing is left.
    """
    up = skyk("serve", "up", "-n", name, str(task), "-y", *args, cwd=REPO, timeout=180)
    assert up.returncode == 0, up.stderr
    endpoint = up.stdout.strip()
    try:
        wait_ready(skyk, name, replicas, timeout=240)

        def answers() -> bool:  # the router lags the controller by a poll
            try:
                return bool(get(f"http://{endpoint}{ready_path}"))
            except OSError:
                return False

        wait_for(answers, timeout=60, interval=0.3, what=f"{endpoint}{ready_path} to answer")
        yield endpoint
    finally:
        down = skyk("serve", "down", name, "-y", timeout=180)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(skyk, home, name, endpoint)

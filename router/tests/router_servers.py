"""Real servers on loopback for the router's tests: fake replicas, the chat page server, a router.

Each start function stops what it started if it fails to come up; the
fixtures in conftest.py stop the rest in ``finally`` blocks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from skyk_router.chat import server as chat_server

HERE = Path(__file__).resolve().parent
#: Run as a script, as on a node: it must not need the router's package.
CHAT_SERVER = Path(chat_server.__file__)


def free_loopback_port() -> int:
    """Return a port the kernel just handed out on 127.0.0.1 (released for the server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout_s: float = 15.0,
               message: str = "condition") -> object:
    """Poll ``condition`` every 50 ms until it returns something true; fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"{message} not met within {timeout_s} s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` and reap it, killing it if it does not exit in 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str, proc: subprocess.Popen, **kwargs) -> bool:
    if proc.poll() is not None:
        pytest.fail(f"{proc.args} exited with {proc.returncode}")
    try:
        requests.get(url, timeout=1, **kwargs)
    except (requests.ConnectionError, requests.Timeout):  # not up yet, or still booting
        return False
    return True


def replica_of(response: requests.Response) -> str:
    """Which fake replica answered."""
    assert response.status_code == 200, response.text
    return response.headers["X-Replica"]


@dataclass
class FakeReplica:
    """A running ``fake_replica.py``."""

    name: str
    url: str
    proc: subprocess.Popen

    def closed(self) -> dict[str, float]:
        """When the router closed each ``/hold`` request, by id."""
        return requests.get(f"{self.url}/-/closed", timeout=5).json()


@dataclass
class Server:
    """A running test server and its base URL."""

    url: str
    proc: subprocess.Popen


def start_server(argv: list[str], url: str, ready_path: str, what: str) -> Server:
    """Run ``argv``, which serves ``url``; wait until ``url + ready_path`` answers."""
    proc = subprocess.Popen(argv)
    try:
        wait_until(lambda: _answers(url + ready_path, proc), message=f"{what} up")
    except BaseException:
        stop(proc)
        raise
    return Server(url, proc)


def start_fake_openai(event_interval_s: float = 0.05) -> Server:
    """``fake_openai.py`` on a free port, streaming one event per ``event_interval_s``."""
    port = free_loopback_port()
    return start_server([sys.executable, str(HERE / "fake_openai.py"), "--port", str(port),
                         "--event-interval", str(event_interval_s)],
                        f"http://127.0.0.1:{port}", "/v1/models", "fake OpenAI server")


def start_chat_server(upstream: str) -> Server:
    """The chat page's own server (``skyk_router/chat/server.py``) relaying to ``upstream``."""
    port = free_loopback_port()
    return start_server([sys.executable, str(CHAT_SERVER), "--port", str(port),
                         "--upstream", upstream],
                        f"http://127.0.0.1:{port}", "/-/health", "chat page server")


def start_fake_replica(name: str) -> FakeReplica:
    """Start a fake replica on a free port and wait until it answers."""
    port = free_loopback_port()
    server = start_server([sys.executable, str(HERE / "fake_replica.py"),
                           "--port", str(port), "--name", name],
                          f"http://127.0.0.1:{port}", "/echo", f"replica {name}")
    return FakeReplica(name, server.url, server.proc)


def dead_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    return f"http://127.0.0.1:{free_loopback_port()}"


@dataclass
class RunningRouter:
    """A gunicorn router reading its replicas from a file the test rewrites."""

    url: str
    replicas_file: Path
    proc: subprocess.Popen
    workers: int
    #: Passed to requests (TLS verification); empty for plain HTTP.
    request_options: dict

    def stats(self) -> dict:
        """The router's ``GET /-/stats``."""
        return requests.get(f"{self.url}/-/stats", timeout=5, **self.request_options).json()

    def sample(self, name: str, **labels: str) -> float:
        """The value of the sample ``name`` with ``labels`` in ``GET /metrics`` (0 if absent)."""
        text = requests.get(f"{self.url}/metrics", timeout=5, **self.request_options).text
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    def set_replicas(self, urls: list[str], policy: str = "round_robin",
                     api_keys_sha256: list[str] | None = None, hold_s: float = 0) -> None:
        """Rewrite the replicas file and wait until every worker routes by it."""
        write_replicas_file(self.replicas_file, urls, policy, api_keys_sha256, hold_s)
        expected = {"replicas": sorted(urls), "load_balancing_policy": policy,
                    "api_keys_required": api_keys_sha256 is not None, "hold_s": hold_s}

        def every_worker_updated() -> bool:
            workers = self.stats()["workers"]
            return len(workers) == self.workers and all(
                {key: worker[key] for key in expected} == expected for worker in workers)

        wait_until(every_worker_updated, message="every worker reads the new replicas")


def write_replicas_file(path: Path, urls: list[str], policy: str = "round_robin",
                        api_keys_sha256: list[str] | None = None, hold_s: float = 0) -> None:
    """Write the controller's JSON to ``path`` atomically, as a controller would."""
    document = {"replicas": [{"id": i, "url": url} for i, url in enumerate(urls, 1)],
                "load_balancing_policy": policy, "api_keys_sha256": api_keys_sha256,
                "hold_s": hold_s}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


def start_router(tmp: Path, workers: int = 2, tls: tuple[Path, Path] | None = None,
                 ) -> RunningRouter:
    """Run ``skyk-router`` (gunicorn, uvicorn workers) on a free port; wait until it answers."""
    replicas_file = tmp / "replicas.json"
    write_replicas_file(replicas_file, [])
    port = free_loopback_port()
    argv = [sys.executable, "-m", "skyk_router", "--port", str(port), "--workers", str(workers),
            "--replicas-file", str(replicas_file)]
    options: dict = {}
    if tls:
        argv += ["--ssl-keyfile", str(tls[0]), "--ssl-certfile", str(tls[1])]
        options = {"verify": str(tls[1])}
    # A HOME of the test's own: nothing the router does may land in the real one.
    env = dict(os.environ, HOME=str(tmp))
    proc = subprocess.Popen(argv, env=env)
    scheme = "https" if tls else "http"
    router = RunningRouter(f"{scheme}://localhost:{port}" if tls else f"http://127.0.0.1:{port}",
                           replicas_file, proc, workers, options)
    try:
        wait_until(lambda: _answers(f"{router.url}/-/health", proc, **options),
                   message="router up")
        wait_until(lambda: len(router.stats()["workers"]) == workers, message="all workers up")
    except BaseException:
        stop(proc)
        raise
    return router

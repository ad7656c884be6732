"""Tests of the router skeleton: the Falcon app, the CLI, and a real gunicorn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import falcon
import falcon.testing
import pytest
import requests
from skyk_router import __main__ as cli
from skyk_router.app import create_app


@pytest.fixture
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app())


def test_health_ok(client):
    result = client.simulate_get("/-/health")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json == {"status": "ok"}


def test_unknown_path_404(client):
    assert client.simulate_get("/v1/does-not-exist").status_code == 404


def test_health_rejects_post(client):
    assert client.simulate_post("/-/health").status_code == 405


def test_factory_builds_independent_apps():
    assert create_app() is not create_app()
    assert isinstance(create_app(), falcon.App)


def test_main_execs_gunicorn_with_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execvp", lambda file, argv: calls.append((file, argv)))
    cli.main([])
    assert calls == [(sys.executable, [sys.executable, "-m", "gunicorn", "skyk_router.wsgi:app",
                                       "--bind", "127.0.0.1:8080", "--workers", "2"])]


def test_main_passes_options(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execvp", lambda file, argv: calls.append(argv))
    cli.main(["--host", "0.0.0.0", "--port", "9000", "--workers", "4"])
    argv = calls[0]
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:9000"
    assert argv[argv.index("--workers") + 1] == "4"


def test_main_brackets_ipv6(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execvp", lambda file, argv: calls.append(argv))
    cli.main(["--host", "::1", "--port", "9001"])
    assert calls[0][calls[0].index("--bind") + 1] == "[::1]:9001"


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--port", "70000"], ["--port", "x"]])
def test_main_rejects_bad_options(monkeypatch, bad):
    monkeypatch.setattr(cli.os, "execvp", lambda *a: pytest.fail("must not exec"))
    with pytest.raises(SystemExit) as exc:
        cli.main(bad)
    assert exc.value.code == 2


def free_loopback_port() -> int:
    """Return a port the kernel just handed out on 127.0.0.1 (released for gunicorn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_gunicorn_serves_health(tmp_path):
    port = free_loopback_port()
    # Newer gunicorn puts a control socket under $HOME; keep it out of the real one.
    env = dict(os.environ, HOME=str(tmp_path))
    url = f"http://127.0.0.1:{port}/-/health"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "skyk_router.wsgi:app",
         "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 15
        response = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}: {proc.stderr.read()}")
            try:
                response = requests.get(url, timeout=1)
            except requests.ConnectionError:
                time.sleep(0.1)
                continue
            if response.status_code == 200:
                break
            time.sleep(0.1)
        assert response is not None, "gunicorn never answered within 15 s"
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()

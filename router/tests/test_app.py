"""Tests of the Falcon app in process (falcon.testing) and of the ``skyk-router`` CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time

import falcon
import falcon.asgi
import falcon.testing
import pytest
from prometheus_client import CollectorRegistry, Histogram
from skyk_router import __main__ as cli
from skyk_router.app import create_app
from skyk_router.metrics import LATENCY_BUCKETS, PendingHistogram
from skyk_router.settings import CONTROLLER_ENV, REPLICAS_FILE_ENV, RouterSettings


@pytest.fixture
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(RouterSettings()))


def test_health_ok(client):
    result = client.simulate_get("/-/health")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json == {"status": "ok"}


def test_unknown_router_path_404(client):
    assert client.simulate_get("/-/does-not-exist").status_code == 404


def test_health_rejects_post(client):
    assert client.simulate_post("/-/health").status_code == 405


def test_factory_builds_independent_apps():
    assert create_app(RouterSettings()) is not create_app(RouterSettings())
    assert isinstance(create_app(RouterSettings()), falcon.asgi.App)


def test_no_replica_answers_503_with_hint(client):
    result = client.simulate_post("/v1/chat/completions", json={"messages": []})
    assert result.status_code == 503
    assert result.json["error"]["message"] == "no ready replica"
    assert "--controller" in result.json["error"]["hint"]


def test_stats_of_a_single_worker(client):
    client.simulate_get("/v1/models")
    stats = client.simulate_get("/-/stats").json
    assert stats["window_s"] == 60
    assert stats["requests_last_window"] == 1
    assert stats["requests_per_second"] == pytest.approx(1 / 60)
    [[second, count]] = stats["requests_by_second"]
    assert count == 1
    assert abs(second - time.time()) < 60
    assert stats["waiting"] == 0
    assert len(stats["workers"]) == 1
    assert stats["workers"][0]["requests_by_second"] == stats["requests_by_second"]


def test_metrics_text(client):
    client.simulate_get("/v1/models")
    result = client.simulate_get("/metrics")
    assert result.headers["content-type"].startswith("text/plain")
    assert 'skyk_router_requests_total{status_class="5xx"} 1.0' in result.text
    assert 'skyk_router_errors_total{kind="no_replica"} 1.0' in result.text


def test_batched_histogram_writes_what_one_observation_at_a_time_would():
    registry = CollectorRegistry()
    one, batched = (Histogram(name, "h", buckets=LATENCY_BUCKETS, registry=registry)
                    for name in ("one", "batched"))
    pending = PendingHistogram(batched)
    for amount in (0.0, 0.001, 0.005, 0.0051, 0.3, 0.3, 60, 1000):
        one.observe(amount)
        pending.observe(amount)
    pending.write()
    pending.write()  # nothing pending: nothing added twice

    def samples(histogram: Histogram) -> list:
        return [(sample.name.split("_", 1)[1], sample.labels, sample.value)
                for sample in histogram.collect()[0].samples
                if not sample.name.endswith("_created")]

    assert samples(batched) == samples(one)


@pytest.mark.slow
def test_the_asgi_path_proxies_and_streams(tmp_path, replicas):
    """Under an ASGI server other than the router's workers, the proxy is a raw ASGI app."""
    path = tmp_path / "replicas.json"
    path.write_text(json.dumps({"replicas": [{"id": 1, "url": replicas["a"].url}]}))
    app = create_app(RouterSettings(replicas_file=str(path)))

    async def fetch(conductor, method: str, path: str, body: bytes = b"",
                    end: bytes = b"") -> tuple[int, bytes]:
        # As a stream (a plain simulate_*() call has its client leave at once),
        # read until the body ends with ``end``.
        result = await conductor.simulate_request(method, path, body=body, _stream_result=True)
        received = b""
        try:
            for _ in range(1000):
                received += await result.stream.read()
                if received.endswith(end):
                    break
                await asyncio.sleep(0.01)
            return result.status_code, received
        finally:
            await result.finalize()

    async def scenario() -> list:
        async with falcon.testing.ASGIConductor(app) as conductor:
            return [await fetch(conductor, "POST", "/echo?x=1", b"hi", b"}"),
                    await fetch(conductor, "GET", "/sse?events=3&interval=0.01",
                                end=b"data: 2\n\n"),
                    await fetch(conductor, "GET", "/status?code=204")]

    (echo_status, echo), (sse_status, sse), (no_content, _) = asyncio.run(scenario())
    assert echo_status == sse_status == 200
    echoed = json.loads(echo)
    assert echoed["body"] == "hi" and echoed["query"] == "x=1"
    assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert sse == b"".join(b"data: %d\n\n" % index for index in range(3))
    assert no_content == 204


def test_api_keys_guard_the_model_api_only(tmp_path):
    replicas = tmp_path / "replicas.json"
    replicas.write_text(json.dumps({"replicas": [], "api_keys_sha256": [
        hashlib.sha256(b"sesame").hexdigest()]}))
    app = create_app(RouterSettings(replicas_file=str(replicas)))

    async def scenario() -> dict[str, int]:
        # The conductor runs the app's lifespan, which reads the replicas file.
        async with falcon.testing.ASGIConductor(app) as conductor:
            return {
                "none": (await conductor.simulate_get("/v1/models")).status_code,
                "wrong": (await conductor.simulate_get(
                    "/v1/models", headers={"Authorization": "Bearer nope"})).status_code,
                # Past the key check, on to "no replica".
                "right": (await conductor.simulate_get(
                    "/v1/models", headers={"Authorization": "Bearer sesame"})).status_code,
                "health": (await conductor.simulate_get("/-/health")).status_code,
                "stats": (await conductor.simulate_get("/-/stats")).status_code,
            }

    assert asyncio.run(scenario()) == {"none": 401, "wrong": 401, "right": 503,
                                       "health": 200, "stats": 200}


def run_cli(monkeypatch, argv, env=None):
    """Run ``main(argv)`` with exec replaced; return the argv and environment it would exec."""
    calls = []
    monkeypatch.setattr(cli.os, "execvpe", lambda file, args, environ: calls.append((args, environ)))
    for name in (CONTROLLER_ENV, REPLICAS_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    cli.main(argv)
    return calls[0]


def test_main_execs_gunicorn_with_defaults(monkeypatch):
    argv, env = run_cli(monkeypatch, ["--controller", "http://10.0.0.1:9000"])
    assert argv == [sys.executable, "-m", "gunicorn", "skyk_router.asgi:app",
                    "--config", "python:skyk_router.gunicorn_conf",
                    "--workers", "2", "--bind", "127.0.0.1:8080"]
    assert env[CONTROLLER_ENV] == "http://10.0.0.1:9000"
    assert REPLICAS_FILE_ENV not in env


def test_main_passes_options(monkeypatch, tmp_path):
    argv, env = run_cli(monkeypatch, [
        "--host", "0.0.0.0", "--port", "9000", "--workers", "4",
        "--replicas-file", "replicas.json", "--ssl-keyfile", "k.pem", "--ssl-certfile", "c.pem"],
        env={CONTROLLER_ENV: "http://inherited"})
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:9000"
    assert argv[argv.index("--workers") + 1] == "4"
    assert argv[argv.index("--keyfile") + 1] == "k.pem"
    assert argv[argv.index("--certfile") + 1] == "c.pem"
    assert env[REPLICAS_FILE_ENV].endswith("/replicas.json")
    assert CONTROLLER_ENV not in env  # the flag wins over the inherited variable


def test_main_reads_the_controller_from_the_environment(monkeypatch):
    _, env = run_cli(monkeypatch, [], env={CONTROLLER_ENV: "http://c:1"})
    assert env[CONTROLLER_ENV] == "http://c:1"


def test_main_brackets_ipv6(monkeypatch):
    argv, _ = run_cli(monkeypatch, ["--host", "::1", "--port", "9001", "--controller", "http://c"])
    assert argv[argv.index("--bind") + 1] == "[::1]:9001"


def test_main_binds_every_host_given(monkeypatch):
    argv, _ = run_cli(monkeypatch, ["--host", "127.0.0.1", "--host", "10.213.0.1", "--port", "9002",
                                    "--controller", "http://c"])
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "--bind"] == [
        "127.0.0.1:9002", "10.213.0.1:9002"]


@pytest.mark.parametrize("bad", [
    ["--workers", "0"], ["--port", "70000"], ["--port", "x"], [],
    ["--controller", "http://c", "--replicas-file", "f"],
    ["--controller", "http://c", "--ssl-keyfile", "k.pem"]])
def test_main_rejects_bad_options(monkeypatch, bad):
    monkeypatch.setattr(cli.os, "execvpe", lambda *a: pytest.fail("must not exec"))
    monkeypatch.delenv(CONTROLLER_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main(bad)
    assert exc.value.code == 2

"""``skyk serve`` autoscaling on the local cloud: request rate, engine queue length, scale to
zero with requests held for the first replica, spot replicas with on-demand fallback, and the
endpoint's TLS and API keys."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from lifecycle_helpers import wait_for
from serve_helpers import (
    SteadyLoad,
    endpoint_host,
    engine_task,
    get,
    needs_router,
    ready_replicas,
    service_json,
    wait_ready,
)

pytestmark = needs_router

#: Short windows so the tests take seconds: the rate is averaged over 2 s.
FAST = {"SKYK_SERVE_QPS_WINDOW": "2", "SKYK_SERVE_BACKOFF": "1"}


@pytest.fixture
def serve(serve_web):
    """``serve(task_text, **env)`` starts service ``web`` with the short windows; returns its endpoint."""
    return lambda text, **env: serve_web(text, **{**FAST, **env})


def _alive(skyk) -> int:
    from skyk.serve.state import ALIVE

    return sum(r["status"] in ALIVE for r in service_json(skyk, "web")["replicas"])


def _wait_alive(skyk, count: int, timeout: float) -> float:
    """Wait until the service runs ``count`` replicas (any state but shutting down or failed); return when."""
    wait_for(lambda: _alive(skyk) == count, timeout=timeout, interval=0.2, what=f"{count} replicas")
    return time.time()


def test_request_rate_scales_up_and_down_within_the_delays(skyk, serve):
    endpoint = serve(engine_task(
        "  readiness_probe: /health\n"
        "  replica_policy: {min_replicas: 1, max_replicas: 3, target_qps_per_replica: 4,"
        " upscale_delay_seconds: 3, downscale_delay_seconds: 5}"))
    wait_ready(skyk, "web", 1)
    time.sleep(3)
    assert _alive(skyk) == 1  # no traffic, no growth
    with SteadyLoad(f"http://{endpoint}/", threads=2, interval=0.05) as load:  # ~20+ requests/s
        began = time.time()
        up = _wait_alive(skyk, 3, timeout=30)
        # Not before the upscale delay; within it plus the rate window and a tick or two.
        assert 3 - 0.5 <= up - began <= 3 + 2 + 6, up - began
        wait_ready(skyk, "web", 3, timeout=60)
    assert load.failures() == []
    quiet = time.time()
    down = _wait_alive(skyk, 1, timeout=40)
    assert 5 - 0.5 <= down - quiet <= 5 + 2 + 10, down - quiet


def test_a_per_accelerator_target_reads_each_replicas_gpu(skyk, serve, tmp_path):
    # The local node offers one T4 (a fake nvidia-smi); at ~20 requests/s a T4 replica's
    # target of 100 holds the load, so the count stays at 1. Were the replica's GPU not
    # known, it would count at the smallest target (L4's 1) and the service would grow.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'Tesla T4'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    endpoint = serve(engine_task(
        "  readiness_probe: /health\n"
        "  replica_policy: {min_replicas: 1, max_replicas: 3, target_qps_per_replica: {T4: 100, L4: 1},"
        " upscale_delay_seconds: 2, downscale_delay_seconds: 60}",
        resources="ports: 8080\n  accelerators: T4"), PATH=f"{bin_dir}:{os.environ['PATH']}")
    wait_ready(skyk, "web", 1)
    with SteadyLoad(f"http://{endpoint}/", threads=2, interval=0.05) as load:
        time.sleep(2 + 2 + 4)  # the rate window, the upscale delay and a few ticks
        assert _alive(skyk) == 1
    assert load.failures() == []


def test_queue_length_reported_by_the_engine_scales_the_service(skyk, serve):
    serve(engine_task(
        "  readiness_probe: /health\n"
        "  replica_policy: {min_replicas: 1, max_replicas: 2, target_queue_length_per_replica: 4,"
        " upscale_delay_seconds: 2, downscale_delay_seconds: 4}"))
    [first] = wait_ready(skyk, "web", 1)

    def set_queue(url: str, length: int) -> None:
        request = urllib.request.Request(f"{url}/-/queue", data=str(length).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5).read()

    # A one-second spike is jitter: it does not add a replica.
    set_queue(first["url"], 20)
    time.sleep(1)
    set_queue(first["url"], 0)
    time.sleep(3)
    assert _alive(skyk) == 1
    set_queue(first["url"], 20)
    began = time.time()
    up = _wait_alive(skyk, 2, timeout=30)
    assert 2 - 0.5 <= up - began <= 2 + 6, up - began
    wait_ready(skyk, "web", 2, timeout=60)
    set_queue(first["url"], 0)
    quiet = time.time()
    down = _wait_alive(skyk, 1, timeout=40)
    assert 4 - 0.5 <= down - quiet <= 4 + 10, down - quiet
    assert [r["id"] for r in service_json(skyk, "web")["replicas"] if r["status"] != "SHUTTING_DOWN"] == [1]


def test_scale_to_zero_holds_requests_for_the_first_replica(skyk, serve):
    endpoint = serve(engine_task(
        "  readiness_probe: /health\n"
        "  replica_policy: {min_replicas: 0, max_replicas: 1, target_qps_per_replica: 1,"
        " upscale_delay_seconds: 30, downscale_delay_seconds: 3}"),
        SKYK_SERVE_COLD_START_HOLD="90")
    time.sleep(2)
    assert service_json(skyk, "web")["replicas"] == []
    began = time.time()
    # No replica exists: the router holds this request while the first one starts.
    assert get(f"http://{endpoint}/", timeout=90) == "replica 1 version 1"
    assert time.time() - began < 60
    _wait_alive(skyk, 0, timeout=40)
    # The request counts in the 2 s QPS window, then the 3 s downscale delay runs (measured from
    # the request, not from its answer: how long the replica took to start must not matter).
    assert time.time() - began >= 2 + 3 - 0.5
    assert service_json(skyk, "web")["status"] == "NO_REPLICA"


def test_scale_to_zero_answers_503_once_the_hold_runs_out(skyk, serve):
    # The replica never becomes ready, so a held request waits out the bound.
    endpoint = serve(engine_task(
        "  readiness_probe: /health\n"
        "  replica_policy: {min_replicas: 0, max_replicas: 1, target_qps_per_replica: 1}", HEALTHY="0"),
        SKYK_SERVE_COLD_START_HOLD="2")
    began = time.time()
    with pytest.raises(urllib.error.HTTPError) as error:
        get(f"http://{endpoint}/", timeout=30)
    assert error.value.code == 503 and 1.5 <= time.time() - began < 20
    assert b"waited" in error.value.read()


def _preempt(cluster: str) -> None:
    """Stop a replica's nodes behind skyk's back, as a cloud reclaiming spot capacity does."""
    from skyk.lifecycle.lookup import cloud_of
    from skyk.state import clusters, db

    handle = clusters.get(db.connect(), cluster).handle
    cloud_of(handle.cloud).stop(handle)


def test_spot_replicas_fall_back_to_on_demand_and_return(skyk, serve, tmp_path, isolated_home):
    outage = tmp_path / "no-spot"
    endpoint = serve(engine_task(
        "  readiness_probe: /health\n"
        "  replica_policy: {min_replicas: 2, base_ondemand_fallback_replicas: 1,"
        " dynamic_ondemand_fallback: true}",
        resources="cloud: flaky\n  use_spot: true\n  ports: 8080"), FLAKY_SPOT_OUTAGE=str(outage))
    ready = wait_ready(skyk, "web", 2)
    assert sorted(r["spot"] for r in ready) == [False, True]
    assert all(r["infra"].startswith("flaky/") for r in ready)
    [spot] = [r for r in ready if r["spot"]]
    assert "[spot]" in spot["resources"]

    with SteadyLoad(f"http://{endpoint}/") as load:
        load.wait_count(10)
        outage.touch()  # no spot capacity anywhere from now on
        _preempt(f"web-{spot['id']}")
        wait_for(lambda: all(r["id"] != spot["id"] or r["status"] in ("PREEMPTED", "SHUTTING_DOWN")
                             for r in service_json(skyk, "web")["replicas"]),
                 timeout=30, what="the spot replica seen as preempted")
        # On-demand stands in while spot capacity is gone.
        stand_in = wait_ready(skyk, "web", 2, timeout=90, spot=False)
        outage.unlink()
        # Spot capacity is back: a spot replica returns and the stand-in goes.
        back = wait_for(lambda: sorted(r["spot"] for r in ready_replicas(skyk, "web")) == [False, True]
                        and _alive(skyk) == 2 and ready_replicas(skyk, "web"),
                        timeout=120, interval=0.3, what="a spot replica back and the stand-in gone")
        load.wait_count(10)
    assert load.failures() == [], load.failures()[:3]
    assert len({r["id"] for r in stand_in} | {r["id"] for r in back}) >= 3


def test_tls_endpoint_with_api_keys(skyk, serve, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", f"subjectAltName=IP:127.0.0.1,IP:{endpoint_host()}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    endpoint = serve(engine_task(
        f"  readiness_probe: /health\n  replicas: 1\n  tls: {{keyfile: {key.name}, certfile: {cert.name}}}")
        + "secrets:\n  SKYK_SERVE_API_KEYS: key-one,key-two\n")
    wait_ready(skyk, "web", 1)
    context = ssl.create_default_context(cafile=str(cert))

    def fetch(**headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"https://{endpoint}/", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    # Every router worker must have learnt the replica: several requests in a row succeed.
    wait_for(lambda: all(fetch(Authorization="Bearer key-two")[0] == 200 for _ in range(6)), timeout=30,
             what="the endpoint over TLS")
    assert fetch(Authorization="Bearer key-one") == (200, "replica 1 version 1")
    assert fetch()[0] == 401
    assert fetch(Authorization="Bearer wrong")[0] == 401
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{endpoint}/", timeout=5)  # plain HTTP is not served

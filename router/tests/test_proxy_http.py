"""HTTP details of the proxy, end to end: bodies, framing, connection reuse, timeouts, TLS.

These hold whatever client the router uses upstream: responses without a
body (HEAD, 204, 304), chunked and large request bodies, large responses,
replicas that close their keep-alive connections, the idle timeout, and
replicas served over HTTPS.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from router_servers import (
    HERE,
    FakeReplica,
    RunningRouter,
    free_loopback_port,
    replica_of,
    start_router,
    stop,
    wait_until,
)
from skyk_router.settings import IDLE_TIMEOUT_ENV

pytestmark = pytest.mark.slow

BIG = 8 * 1024 * 1024


def start_replica(name: str, *options: str, verify: str | bool = True) -> FakeReplica:
    """A fake replica with extra command-line ``options`` (``https`` when given a certificate)."""
    port = free_loopback_port()
    scheme = "https" if "--ssl-certfile" in options else "http"
    url = f"{scheme}://{'localhost' if scheme == 'https' else '127.0.0.1'}:{port}"
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_replica.py"), "--port", str(port),
                             "--name", name, *options])

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"replica {name} exited with {proc.returncode}")
        try:
            return requests.get(f"{url}/echo", timeout=1, verify=verify).ok
        except requests.RequestException:
            return False

    try:
        wait_until(answers, message=f"replica {name} up")
    except BaseException:
        stop(proc)
        raise
    return FakeReplica(name, url, proc)


def test_answers_without_a_body_keep_the_connections_usable(router, replicas):
    router.set_replicas([replicas["a"].url])
    with requests.Session() as client:  # one router connection, reused throughout
        for _ in range(3):
            got = client.get(f"{router.url}/echo", timeout=5)
            head = client.head(f"{router.url}/echo", timeout=5)
            assert head.status_code == 200
            assert head.content == b""
            assert int(head.headers["Content-Length"]) > 0  # the replica's, passed on
            assert replica_of(head) == "a"
            for code in (204, 304):
                empty = client.get(f"{router.url}/status?code={code}", timeout=5)
                assert empty.status_code == code
                assert empty.content == b""
                assert empty.headers["X-Replica"] == "a"
            assert got.json()["path"] == "/echo"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
def test_any_method_and_its_body_pass_through(router, replicas, method):
    router.set_replicas([replicas["a"].url])
    got = requests.request(method, f"{router.url}/echo", data=b"payload", timeout=5)
    assert got.json()["method"] == method
    assert got.json()["body"] == "payload"
    assert got.json()["headers"]["content-length"] == "7"


def test_a_post_without_a_body_says_so(router, replicas):
    router.set_replicas([replicas["a"].url])
    got = requests.post(f"{router.url}/echo", timeout=5)
    assert got.json()["headers"].get("content-length") == "0"
    assert "content-length" not in requests.get(f"{router.url}/echo", timeout=5).json()["headers"]


def test_chunked_request_body_arrives_whole_with_a_length(router, replicas):
    router.set_replicas([replicas["a"].url])
    pieces = [b"first piece ", b"x" * 100_000, b" last"]
    # A generator: requests sends it with Transfer-Encoding: chunked.
    got = requests.post(f"{router.url}/digest", data=iter(pieces), timeout=10).json()
    body = b"".join(pieces)
    assert got["size"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["headers"]["content-length"] == str(len(body))
    assert "transfer-encoding" not in got["headers"]


def test_large_bodies_both_ways(router, replicas):
    router.set_replicas([replicas["a"].url])
    body = bytes(range(256)) * (BIG // 256)
    got = requests.post(f"{router.url}/digest", data=body, timeout=30).json()
    assert got == {"size": BIG, "sha256": hashlib.sha256(body).hexdigest(),
                   "headers": got["headers"]}
    for chunked in ("0", "1"):
        answer = requests.get(f"{router.url}/bytes?n={BIG}&chunked={chunked}", timeout=30)
        assert answer.status_code == 200
        assert answer.content == body


def test_replica_closing_its_connections_costs_no_failure(router, replicas):
    router.set_replicas([replicas["a"].url])
    before = router.sample("skyk_router_errors_total", kind="connect")
    with requests.Session() as client:
        for _ in range(20):  # each answer closes the replica's connection
            assert client.get(f"{router.url}/close", timeout=5).json()["replica"] == "a"
    assert router.sample("skyk_router_errors_total", kind="connect") == before


def test_replica_closing_idle_connections_costs_no_failure(router):
    # A replica that closes a connection idle for 0.2 s, as uvicorn does after 5 s.
    brisk = start_replica("brisk", "--keepalive-timeout", "0.2")
    try:
        router.set_replicas([brisk.url])
        before = router.sample("skyk_router_errors_total", kind="connect")
        with requests.Session() as client:
            for pause in (0.0, 0.3, 0.05, 0.3, 0.19, 0.21, 0.5):
                time.sleep(pause)
                assert replica_of(client.get(f"{router.url}/echo", timeout=5)) == "brisk"
        assert router.sample("skyk_router_errors_total", kind="connect") == before
    finally:
        stop(brisk.proc)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for ``localhost``: (key, cert) paths."""
    tmp = tmp_path_factory.mktemp("tls")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(key), str(cert)


@pytest.fixture(scope="module")
def strict_router(tmp_path_factory, certificate) -> Iterator[RunningRouter]:
    """A router that trusts ``certificate`` and gives up on a replica silent for 1 s."""
    with pytest.MonkeyPatch.context() as patch:
        # Read by the workers' default TLS context, as an operator's own CA would be.
        patch.setenv("SSL_CERT_FILE", certificate[1])
        patch.setenv(IDLE_TIMEOUT_ENV, "1")
        running = start_router(tmp_path_factory.mktemp("strict-router"), workers=1)
    try:
        yield running
    finally:
        stop(running.proc)


def test_https_replica(strict_router, certificate):
    key, cert = certificate
    secure = start_replica("secure", "--ssl-certfile", cert, "--ssl-keyfile", key, verify=cert)
    try:
        strict_router.set_replicas([secure.url])
        for _ in range(3):
            got = requests.post(f"{strict_router.url}/echo?x=1", data=b"over tls", timeout=5)
            assert replica_of(got) == "secure"
            assert got.json()["body"] == "over tls"
            assert got.json()["query"] == "x=1"
        events = requests.get(f"{strict_router.url}/sse?events=3&interval=0.05", timeout=5)
        assert events.text == "".join(f"data: {i}\n\n" for i in range(3))
    finally:
        stop(secure.proc)


def test_idle_timeout(strict_router, replicas):
    strict_router.set_replicas([replicas["a"].url])
    # Silent before its first byte: a failure before answering, hence 503.
    started = time.monotonic()
    silent = requests.get(f"{strict_router.url}/slow?delay=3", timeout=10)
    assert silent.status_code == 503
    assert "failed before answering" in silent.json()["error"]["hint"]
    assert time.monotonic() - started < 2.5
    # Silent between chunks: the stream is cut.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = requests.get(f"{strict_router.url}/sse?events=3&interval=2", timeout=10).content
    # Slow but never silent for 1 s: streamed to its end.
    steady = requests.get(f"{strict_router.url}/sse?events=4&interval=0.5", timeout=10)
    assert steady.text == "".join(f"data: {i}\n\n" for i in range(4))

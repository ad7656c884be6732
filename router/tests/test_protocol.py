"""The workers' HTTP protocol on the wire: what uvicorn's ASGI path did, the fast path does too.

Raw sockets, so the framing is seen as sent: pipelined requests (proxied and
the router's own, mixed) answered in order, ``Connection: close`` and
HTTP/1.0, ``Expect: 100-continue``, chunked re-framing of a replica's
chunked answer, and flow control for a client that does not read.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from router_servers import replica_of

pytestmark = pytest.mark.slow


def connect(router) -> socket.socket:
    parts = urlsplit(router.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_answer(sock: socket.socket, buffer: bytearray) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One answer off ``sock``: status line, headers (lower-case names), body (unframed)."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        assert data, f"connection closed mid-head: {bytes(buffer)!r}"
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[:]
    buffer += rest
    status, *lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        assert name.lower() not in headers, f"header {name!r} sent twice"
        headers[name.lower()] = value.strip()
    if status.startswith(b"HTTP/1.1 1"):  # informational: the answer follows
        return status, headers, b""
    body = bytearray()
    if b"content-length" in headers:
        size = int(headers[b"content-length"])
        while len(buffer) < size:
            buffer += sock.recv(65536)
        body += buffer[:size]
        del buffer[:size]
    elif headers.get(b"transfer-encoding") == b"chunked":
        while True:
            while b"\r\n" not in buffer:
                buffer += sock.recv(65536)
            size_line, _, _ = bytes(buffer).partition(b"\r\n")
            size = int(size_line, 16)
            del buffer[:len(size_line) + 2]
            while len(buffer) < size + 2:
                buffer += sock.recv(65536)
            body += buffer[:size]
            del buffer[:size + 2]
            if size == 0:
                break
    return status, headers, bytes(body)


def test_pipelined_requests_are_answered_in_order(router, replicas):
    router.set_replicas([replicas["a"].url])
    with connect(router) as sock:
        sock.sendall(b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /slow?delay=0.2&n=3 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /echo?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        buffer = bytearray()
        answers = [read_answer(sock, buffer) for _ in range(5)]
    assert [status for status, _, _ in answers] == [b"HTTP/1.1 200 OK"] * 5
    assert json.loads(answers[1][2]) == {"status": "ok"}
    echoed = [json.loads(body) for _, _, body in (answers[0], *answers[2:])]
    assert [echo["query"] for echo in echoed] == ["n=1", "n=2", "delay=0.2&n=3", "n=4"]
    assert echoed[1]["body"] == "hello"


@pytest.mark.parametrize("request_head", [
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n",
])
def test_the_connection_closes_when_the_client_asks(router, replicas, request_head):
    router.set_replicas([replicas["a"].url])
    with connect(router) as sock:
        sock.sendall(request_head)
        status, headers, body = read_answer(sock, bytearray())
        assert status.endswith(b"200 OK")
        assert headers[b"connection"] == b"close"
        assert json.loads(body)["replica"] == "a"
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed by the router


def test_expect_100_continue(router, replicas):
    router.set_replicas([replicas["a"].url])
    with connect(router) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        buffer = bytearray()
        status, _, _ = read_answer(sock, buffer)
        assert status == b"HTTP/1.1 100 Continue"
        sock.sendall(b"hello")
        status, _, body = read_answer(sock, buffer)
        assert status.endswith(b"200 OK")
        echoed = json.loads(body)
        assert echoed["body"] == "hello"
        assert "expect" not in echoed["headers"]


def test_framing_of_answers(router, replicas):
    """A chunked answer is chunked again; one with a length keeps it; HEAD has no body."""
    router.set_replicas([replicas["a"].url])
    with connect(router) as sock:
        buffer = bytearray()
        sock.sendall(b"GET /bytes?n=300000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        _, headers, body = read_answer(sock, buffer)
        assert headers[b"transfer-encoding"] == b"chunked"
        assert body == bytes(range(256)) * (300000 // 256) + bytes(300000 % 256)
        sock.sendall(b"GET /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        _, headers, body = read_answer(sock, buffer)
        assert headers[b"content-length"] == b"1000" and b"transfer-encoding" not in headers
        assert len(body) == 1000
        sock.sendall(b"HEAD /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        assert b"content-length: 1000" in head.lower() and rest == b""
        # The connection still serves, with no stray body bytes in the way.
        del buffer[:]
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        _, headers, body = read_answer(sock, buffer)
        assert json.loads(body)["replica"] == "a"


def worker_rss_kib(router) -> int:
    """Resident memory of the router's workers (the gunicorn master's children)."""
    total = 0
    for task in Path(f"/proc/{router.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_a_client_that_does_not_read_does_not_make_the_router_buffer(router, replicas):
    router.set_replicas([replicas["a"].url])
    size = 128 * 1024 * 1024
    before = worker_rss_kib(router)
    with connect(router) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /bytes?n={size}&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(3)  # the replica could send it all by now, were it not paused
        grown_mib = (worker_rss_kib(router) - before) / 1024
        received = 0
        sock.settimeout(30)
        while received < size:
            data = sock.recv(1024 * 1024)
            assert data
            received += len(data)
    assert grown_mib < 48, f"the workers grew by {grown_mib:.0f} MiB for a client not reading"


def test_the_router_paths_still_answer_beside_proxied_ones(router, replicas):
    router.set_replicas([replicas["b"].url])
    with connect(router) as sock:
        buffer = bytearray()
        for path in (b"/echo", b"/metrics", b"/-/stats", b"/echo"):
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_answer(sock, buffer)
            assert status.endswith(b"200 OK"), path
            assert b"date" in headers and b"server" in headers
    assert replica_of(requests.get(f"{router.url}/echo", timeout=5)) == "b"


def test_idle_keep_alive_connections_close_and_busy_ones_stay(router, replicas):
    """gunicorn's keep-alive timeout (2 s by default) counts from a connection's last answer."""
    router.set_replicas([replicas["a"].url])
    with connect(router) as sock:
        buffer = bytearray()
        started = time.monotonic()
        for _ in range(4):  # 4.5 s in all, never idle for 2 s
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock, buffer)[0].endswith(b"200 OK")
            time.sleep(1.5)
        assert time.monotonic() - started > 4
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock, buffer)[0].endswith(b"200 OK")
        idle_from = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the router
        assert 1.5 < time.monotonic() - idle_from < 5

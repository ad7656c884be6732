"""The router's HTTP/1.1 client to its replicas: kept-alive, pooled connections.

A protocol (:class:`asyncio.Protocol`) fed to httptools' response parser, the
parser uvicorn already uses: about a third of the CPU time per request of a
general-purpose client such as aiohttp, which matters because every proxied
request pays it. It does only what the proxy needs: send a request whose
head and body are ready in bytes, wait for the response headers, then read
the body chunk by chunk as it arrives.

The pool keeps idle connections per replica, newest first, and never more
than :data:`POOL_SIZE` busy ones per worker (further requests wait for one).
A replica may close an idle connection at any moment (uvicorn does after
5 s); a request that fails on a reused connection before any byte of its
answer is sent again once, on a new connection, so the replica is not
blamed for it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

#: Busy connections per worker: room for ~1000 streams.
POOL_SIZE = 1024
#: Idle connections older than this are closed (aiohttp's default keep-alive).
KEEPALIVE_S = 15.0
#: Body bytes buffered from a replica before it must wait for the client to take them.
READ_HIGH_WATER = 256 * 1024


class UpstreamError(ConnectionError):
    """A replica's connection failed, closed early, timed out or sent a malformed answer."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """A replica stayed silent for longer than the idle timeout."""


@dataclass(frozen=True)
class Origin:
    """Where a replica URL's requests go, and what its request heads say."""

    url: str
    host: str
    port: int
    tls: bool
    #: The Host header's value: host, and the port unless it is the scheme's default.
    host_header: bytes
    #: The URL's path (no trailing slash), put before each request's target.
    base_path: bytes


@functools.lru_cache(maxsize=256)
def origin_of(url: str) -> Origin:
    """The :class:`Origin` of a replica's base URL (``http(s)://host[:port][/path]``)."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    default_port = 443 if tls else 80
    host = parts.hostname or ""
    port = parts.port or default_port
    shown = f"[{host}]" if ":" in host else host
    if port != default_port:
        shown += f":{port}"
    return Origin(url, host, port, tls, shown.encode("idna"),
                  parts.path.rstrip("/").encode("latin-1"))


class UpstreamConnection(asyncio.Protocol):
    """One connection to a replica, carrying one request at a time.

    After :meth:`send`, ``status`` and ``headers`` hold the response head;
    :meth:`read` returns the body as it arrives.
    """

    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self.origin = origin
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        #: monotonic time it went idle (in the pool).
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._head_done = False
        self._informational = False
        self._head_only = False
        #: The whole answer arrived.
        self.complete = False
        self._keep_alive = False
        #: Whether any byte of the answer arrived.
        self.received_any = False
        self._error: UpstreamError | None = None
        self._paused = False
        self._last_data = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.received_any = True
        self._last_data = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"malformed answer from {self.origin.url}: {error}"))
            return
        if self._chunks or self.complete or self._head_done:
            self._wake()

    def eof_received(self) -> bool:  # noqa: D102
        return False  # close the transport; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        self._pool.forget(self)
        if self._error is None and not self.complete:
            if self._ends_at_eof():  # an answer without length ends with its connection
                self.complete = True
            else:
                reason = f": {exc!r}" if exc else ""
                self._error = UpstreamError(
                    f"{self.origin.url} closed the connection before the answer ended{reason}")
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:  # noqa: D102
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:  # noqa: D102
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            self._informational = True
            self.headers = []
            return
        self.status = status
        self._head_done = True
        if self._head_only:
            # The parser expects the body the headers announce; a HEAD answer has
            # none, so this answer is complete and the connection is not reused.
            self.complete = True

    def on_body(self, body: bytes) -> None:  # noqa: D102
        if self._head_only:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._paused and self._transport:
            # Backpressure: the client reads slower than the replica writes.
            self._paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:  # noqa: D102
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()

    # used by the proxy

    async def send(self, head: bytes, body: bytes, head_only: bool) -> None:
        """Send one request; return once the answer's headers are in."""
        self._reset()
        self._head_only = head_only
        assert self._transport is not None
        self._transport.writelines((head, body) if body else (head,))
        self._arm_timer()
        while not self._head_done:
            await self._wait()

    async def read(self) -> bytes:
        """The body bytes that arrived since the last call; ``b""`` at the end of the body.

        Raises :class:`UpstreamError` when the answer breaks off.
        """
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            await self._wait()
        chunks = self._chunks
        self._chunks = []
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @property
    def reusable(self) -> bool:
        """Whether another request may follow on this connection."""
        return (self.complete and self._keep_alive and not self._head_only
                and not self._chunks and self._error is None and self._transport is not None
                and not self._transport.is_closing())

    def close(self) -> None:
        """Close the connection; a pending :meth:`read` raises."""
        self._fail(UpstreamError(f"connection to {self.origin.url} closed by the router"))

    def finish(self) -> None:
        """End the exchange: stop its timer (the pool then keeps or closes the connection)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # internals

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ends_at_eof(self) -> bool:
        # An answer with neither length nor chunks runs until the connection closes.
        if not self._head_done or self.status in (204, 304):
            return False
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self.complete:
            self._error = error
        if self._transport is not None:
            self._transport.close()
        self.finish()
        self._wake()

    def _arm_timer(self) -> None:
        # One timer per exchange, not one per read: when it fires, it checks how
        # long the replica has really been silent and sleeps again if not long enough.
        self._last_data = time.monotonic()
        self._timer = self._loop.call_later(self._pool.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.complete or self._error is not None:
            return
        now = time.monotonic()
        if self._paused:  # waiting for the client to read, not for the replica
            self._last_data = now
        silent = now - self._last_data
        if silent < self._pool.idle_timeout_s:
            self._timer = self._loop.call_later(self._pool.idle_timeout_s - silent,
                                                self._check_idle)
            return
        self._fail(UpstreamTimeout(
            f"{self.origin.url} sent nothing for {self._pool.idle_timeout_s:g} s"))


class UpstreamPool:
    """This worker's connections to the replicas."""

    def __init__(self, connect_timeout_s: float, idle_timeout_s: float,
                 limit: int = POOL_SIZE) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._limit = limit
        self._busy = 0
        self._slot_waiters: collections.deque[asyncio.Future] = collections.deque()
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def send(self, origin: Origin, head: bytes, body: bytes,
                   head_only: bool = False) -> UpstreamConnection:
        """Send a request to ``origin``; return its connection once the answer's headers are in.

        The caller reads the body from the connection, then hands it back with
        :meth:`release`, whatever happened. Raises :class:`OSError`
        (:class:`UpstreamError` among them) when the replica fails before answering.
        """
        if self._busy >= self._limit:
            await self._wait_for_slot()
        self._busy += 1
        connection = None
        try:
            connection = self._idle_connection(origin)
            if connection is not None:
                try:
                    await connection.send(head, body, head_only)
                    return connection
                except UpstreamError as error:
                    if connection.received_any or isinstance(error, UpstreamTimeout):
                        raise
                    # Closed by the replica while idle: not the replica's fault.
                    connection.close()
            connection = await self._connect(origin)
            await connection.send(head, body, head_only)
            return connection
        except BaseException:
            # Cancelled too (the client left): closing tells the replica to stop.
            if connection is not None:
                connection.close()
            self._release_slot()
            raise

    def release(self, connection: UpstreamConnection) -> None:
        """Take a connection back after its answer: keep it for the next request, or close it."""
        connection.finish()
        self._release_slot()
        if not connection.reusable or self._closed:
            connection.close()
            return
        now = time.monotonic()
        connection.idle_since = now
        idle = self._idle.setdefault(connection.origin.url, [])
        idle.append(connection)
        # The oldest idle connection is at the bottom: close it once it is stale.
        if idle[0].idle_since < now - KEEPALIVE_S:
            idle.pop(0).close()

    def forget(self, connection: UpstreamConnection) -> None:
        """Drop a connection that closed from the idle ones, if it is there."""
        idle = self._idle.get(connection.origin.url)
        if idle and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        """Close every idle connection (busy ones close when released)."""
        self._closed = True
        for idle in self._idle.values():
            for connection in list(idle):
                connection.close()
        self._idle.clear()

    def _idle_connection(self, origin: Origin) -> UpstreamConnection | None:
        idle = self._idle.get(origin.url)
        while idle:
            connection = idle.pop()  # the newest: the least likely to be closed by now
            if connection.reusable:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.tls:
            if self._tls is None:
                # Verified against the system's CAs (or $SSL_CERT_FILE), as aiohttp did.
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self, origin),
                                       origin.host, origin.port, ssl=tls,
                                       server_hostname=origin.host if tls else None),
                self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"cannot connect to {origin.url} within "
                                  f"{self.connect_timeout_s:g} s") from None
        return connection

    async def _wait_for_slot(self) -> None:
        while self._busy >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_slot_waiter()  # woken, but leaving: pass the slot on
                raise

    def _release_slot(self) -> None:
        self._busy -= 1
        self._wake_slot_waiter()

    def _wake_slot_waiter(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

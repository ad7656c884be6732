"""The router's HTTP/1.1 client to its replicas: kept-alive, pooled connections.

A protocol (:class:`asyncio.Protocol`) fed to httptools' response parser, the
parser uvicorn already uses, and driven by callbacks rather than awaited: a
request is written with :meth:`UpstreamConnection.start`, and the parser's
callbacks hand the answer's head, body chunks and end (or a failure) to an
:class:`UpstreamListener` as they arrive. Every proxied request pays for what
runs here, so no future, task or buffer stands between a replica's bytes and
the client's transport.

The pool keeps idle connections per replica, newest first, and never more
than :data:`POOL_SIZE` busy ones per worker (further requests wait for one).
A replica may close an idle connection at any moment (uvicorn does after
5 s); the listener learns whether a failed connection was a reused one that
got no byte of its answer, so it can send the request again on a new
connection without blaming the replica.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httptools

#: Busy connections per worker: room for ~1000 streams.
POOL_SIZE = 1024
#: Idle connections older than this are closed (aiohttp's default keep-alive).
KEEPALIVE_S = 15.0


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


class UpstreamListener(Protocol):
    """What hears of one answer on an :class:`UpstreamConnection` (the proxy's exchange)."""

    def upstream_head(self, connection: UpstreamConnection) -> None:
        """The answer's status and headers are in (``connection.status``, ``.headers``)."""

    def upstream_data(self, data: bytes) -> None:
        """Body bytes arrived."""

    def upstream_flush(self) -> None:
        """What arrived from one read of the connection was told (the answer goes on)."""

    def upstream_end(self, connection: UpstreamConnection) -> None:
        """The whole answer arrived."""

    def upstream_failed(self, connection: UpstreamConnection, error: UpstreamError) -> None:
        """The connection failed, closed early, timed out or sent a malformed answer."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to a replica, carrying one request at a time.

    After :meth:`start`, ``status`` and ``headers`` hold the response head once
    the listener heard :meth:`UpstreamListener.upstream_head`.
    """

    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self.origin = origin
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._listener: UpstreamListener | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        #: monotonic time it went idle (in the pool).
        self.idle_since = 0.0
        #: Whether it carried an answer before this one (it may have gone stale in the pool).
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers = []
        self._head_done = False
        self._informational = False
        self._head_only = False
        #: The whole answer arrived.
        self.complete = False
        self._keep_alive = False
        #: Whether any byte of the answer arrived.
        self.received_any = False
        self._failed = False
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
        # The end is told only once the parser is done with this data: the
        # listener gives the connection back, and the next request may take it.
        if self.complete:
            self._ended()
        elif self._listener is not None:
            self._listener.upstream_flush()

    def eof_received(self) -> bool:  # noqa: D102
        return False  # close the transport; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        self._pool.forget(self)
        if self._listener is None or self.complete:
            return
        if self._ends_at_eof():  # an answer without length ends with its connection
            self.complete = True
            self._ended()
        else:
            reason = f": {exc!r}" if exc else ""
            self._fail(UpstreamError(
                f"{self.origin.url} closed the connection before the answer ended{reason}"))

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
        if self._listener is not None:
            self._listener.upstream_head(self)

    def on_body(self, body: bytes) -> None:  # noqa: D102
        if self._head_only or self._listener is None:
            return
        self._listener.upstream_data(body)

    def on_message_complete(self) -> None:  # noqa: D102
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()

    # used by the proxy

    def start(self, listener: UpstreamListener, head: bytes, body: bytes,
              head_only: bool) -> None:
        """Send one request; ``listener`` hears of its answer.

        A connection already lost fails at once (``upstream_failed``, no byte
        received), so the request can go to another replica.
        """
        self._reset()
        self._listener = listener
        self._head_only = head_only
        transport = self._transport
        if transport is None or transport.is_closing():
            # Lost between connecting and now (the replica died, or closed an
            # idle connection): nothing was sent, so the listener may send it again.
            self._fail(UpstreamError(
                f"{self.origin.url} closed the connection before the request was sent"))
            return
        transport.writelines((head, body) if body else (head,))
        self._last_data = time.monotonic()
        self._pool.watch(self)

    def pause(self) -> None:
        """Stop reading the answer: the client takes it slower than the replica sends it."""
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        """Read the answer again."""
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    @property
    def reusable(self) -> bool:
        """Whether another request may follow on this connection."""
        return (self.complete and self._keep_alive and not self._head_only
                and not self._failed and self._transport is not None
                and not self._transport.is_closing())

    def close(self) -> None:
        """Close the connection; its listener hears nothing more."""
        self._listener = None
        self._failed = True
        if self._transport is not None:
            self._transport.close()
        self.finish()

    def finish(self) -> None:
        """End the exchange: stop watching it for silence (the pool then keeps or closes it)."""
        self._pool.unwatch(self)

    def check_silence(self, now: float) -> None:
        """Fail the exchange if the replica has sent nothing for the idle timeout."""
        if self.complete or self._listener is None:
            return
        if self._paused:  # waiting for the client to read, not for the replica
            self._last_data = now
        elif now - self._last_data >= self._pool.idle_timeout_s:
            self._fail(UpstreamTimeout(
                f"{self.origin.url} sent nothing for {self._pool.idle_timeout_s:g} s"))

    # internals

    def _ended(self) -> None:
        self.finish()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.upstream_end(self)

    def _ends_at_eof(self) -> bool:
        # An answer with neither length nor chunks runs until the connection closes.
        if not self._head_done or self.status in (204, 304):
            return False
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: UpstreamError) -> None:
        listener = self._listener
        self.close()
        if listener is not None:
            listener.upstream_failed(self, error)


class UpstreamPool:
    """This worker's connections to the replicas, and its slots for busy ones."""

    def __init__(self, connect_timeout_s: float, idle_timeout_s: float,
                 limit: int = POOL_SIZE) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._limit = limit
        self._busy = 0
        self._slot_waiters: collections.deque[Callable[[], bool]] = collections.deque()
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False
        # Connections awaiting an answer, checked for silence by one timer for
        # them all, rather than a timer armed and cancelled per request.
        self._watched: set[UpstreamConnection] = set()
        self._sweep_every = max(0.05, min(1.0, idle_timeout_s / 4))
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self, connection: UpstreamConnection) -> None:
        """Check ``connection`` for silence until :meth:`unwatch`."""
        self._watched.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    def unwatch(self, connection: UpstreamConnection) -> None:
        """Stop checking ``connection`` for silence."""
        self._watched.discard(connection)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self._watched):
            connection.check_silence(now)
        self._sweeper = asyncio.get_running_loop().call_later(
            self._sweep_every, self._sweep) if self._watched else None

    def claim_slot(self, granted: Callable[[], bool]) -> bool:
        """Take a busy slot now (True), or queue for one (False).

        ``granted`` is called later, with the slot taken, when one frees; it
        returns False when its request no longer wants it (the slot is passed on).
        """
        if self._busy < self._limit:
            self._busy += 1
            return True
        self._slot_waiters.append(granted)
        return False

    def release_slot(self) -> None:
        """Give back a slot taken with :meth:`claim_slot`."""
        self._busy -= 1
        while self._slot_waiters and self._busy < self._limit:
            granted = self._slot_waiters.popleft()
            self._busy += 1
            if granted():
                return
            self._busy -= 1

    def idle_connection(self, origin: Origin) -> UpstreamConnection | None:
        """A kept-alive connection to ``origin``, or None when there is none."""
        idle = self._idle.get(origin.url)
        while idle:
            connection = idle.pop()  # the newest: the least likely to be closed by now
            if connection.reusable:
                return connection
            connection.close()
        return None

    async def connect(self, origin: Origin) -> UpstreamConnection:
        """A new connection to ``origin``.

        Raises :class:`OSError` (:class:`UpstreamTimeout` past the connect timeout).
        """
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

    def release(self, connection: UpstreamConnection) -> None:
        """Take a connection back after its answer: keep it for the next request, or close it."""
        connection.finish()
        if not connection.reusable or self._closed:
            connection.close()
            return
        now = time.monotonic()
        connection.idle_since = now
        connection.reused = True
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in list(idle):
                connection.close()
        self._idle.clear()

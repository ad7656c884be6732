"""Relaying requests to replicas: retries before the first byte, streaming after.

A request is sent to the replica the policy picks. If that replica fails
before answering (refused, reset, silent), the next one is tried: nothing has
reached the client yet. Once the replica's headers are in, the response is
relayed chunk by chunk as it arrives and never retried; a replica failing
mid-response aborts the client's connection so the client sees the truncation.

A replica that fails before answering is also ejected for a few seconds (tried
after the others), so a dead replica costs one failed connection, not one per
request. While no replica is ready and the service asks for it (``hold_s``),
a request is held until one starts, instead of answering 503 at once.

Each request is an :class:`Exchange`, driven by callbacks: from the client's
side (:class:`Client`: the request arrived, the client left, its connection
can take more) and from the replica's (:class:`~skyk_router.upstream.UpstreamListener`).
On the common path (a kept-alive connection to a ready replica) it runs no
task and awaits nothing; holding for a replica and opening a connection, the
rare paths, run in a task of the exchange. Two clients drive exchanges:
:class:`~skyk_router.protocol.RouterProtocol`, the HTTP server protocol of the
router's gunicorn workers, and :class:`Proxy` itself as a raw ASGI app for
any other ASGI server (and the tests' ASGI clients).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Protocol

from skyk.serve.policies import LoadBalancingPolicy

from skyk_router.auth import key_matches
from skyk_router.balancing import (
    EJECT_S,
    SESSION_HEADER,
    ConsistentHash,
    Ejections,
    InFlight,
    make_policy,
    request_key,
)
from skyk_router.forwarding import (
    client_address,
    has_body,
    header_value,
    request_head_tail,
    request_target,
    response_headers,
)
from skyk_router.metrics import RouterMetrics
from skyk_router.replicas import DEFAULT_POLICY, ReplicaView, ReplicaWatcher
from skyk_router.replies import Receive, Send, error_document, json_reply
from skyk_router.settings import RouterSettings
from skyk_router.stats import WorkerStats
from skyk_router.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    origin_of,
)

log = logging.getLogger(__name__)

#: Failures that happen before a replica's first byte, and so may be retried:
#: refused or reset connections, TLS failures, timeouts (UpstreamError is an OSError).
RETRYABLE = (OSError, asyncio.TimeoutError)
SESSION_HEADER_NAME = SESSION_HEADER.lower().encode("latin-1")
#: nginx's status for "the client closed the connection", in the metrics.
CLIENT_CLOSED = 499
#: Body bytes the ASGI path queues for a slow client before pausing the replica.
ASGI_HIGH_WATER = 256 * 1024


class UpstreamBroke(RuntimeError):
    """A replica failed after its first byte; the client's connection is aborted."""


class Client(Protocol):
    """The client side of an :class:`Exchange`: where its answer goes."""

    def respond(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the status and headers (the replica's, without hop-by-hop ones)."""

    def write(self, data: bytes) -> None:
        """Send body bytes."""

    def flush(self) -> None:
        """Send on what :meth:`respond` and :meth:`write` may have held back.

        Called once per read of the replica's connection, so that what one read
        brought (often the whole answer) goes to the client in one write.
        """

    def end(self) -> None:
        """The answer is complete (flushed too)."""

    def abort(self) -> None:
        """The answer broke off after it started: close the client's connection."""


class Exchange:
    """One proxied request, from its arrival to the end of its answer.

    The client calls :meth:`begin` once the whole request arrived, and
    :meth:`client_left` if its connection closes first; :meth:`pause` and
    :meth:`resume` pass its flow control on to the replica's connection.
    """

    __slots__ = ("_proxy", "_client", "method", "target", "headers", "peer", "body",
                 "_started", "_policy", "_key", "_tail", "_remaining", "_tried",
                 "_last_error", "_url", "_origin", "_upstream", "_task", "_has_slot",
                 "_status", "_answering", "_first", "_paused", "done")

    def __init__(self, proxy: Proxy, client: Client, method: str, target: bytes,
                 headers: list[tuple[bytes, bytes]], peer: str) -> None:
        self._proxy = proxy
        self._client = client
        self.method = method
        #: The path and query, as the client sent them.
        self.target = target
        #: The request headers, names in lower case.
        self.headers = headers
        #: The client's address, for X-Forwarded-For.
        self.peer = peer
        self.body = b""
        self._started = time.monotonic()
        self._url: str | None = None
        self._upstream: UpstreamConnection | None = None
        self._task: asyncio.Task | None = None
        self._has_slot = False
        self._status = 0
        self._answering = False
        self._first = True
        self._paused = False
        #: The exchange is over (answered, failed, or its client left).
        self.done = False

    # from the client

    def begin(self, body: bytes) -> None:
        """The whole request arrived: answer it (``body`` is read whole, for retries)."""
        self.body = body
        proxy = self._proxy
        view = proxy.watcher.view
        accepted = view.api_keys_sha256
        if accepted is not None and not key_matches(
                header_value(self.headers, b"authorization"), accepted):
            self.done = True
            reply_json(self._client, 401, error_document(
                401, "invalid or missing API key", "invalid_api_key",
                "send the header 'Authorization: Bearer <your key>'"),
                [(b"www-authenticate", b"Bearer")])
            return
        # Counted on arrival (held requests too): the autoscaler sizes for demand.
        proxy.stats.rate.record()
        if view.urls:
            self._seek(view)
        elif view.hold_s:
            self._task = asyncio.ensure_future(self._hold(view.hold_s))
        else:
            self._unavailable(proxy.not_ready_hint())

    def client_left(self) -> None:
        """The client closed its connection: stop, and tell the replica to stop too."""
        if self.done:
            return
        if self._task is not None:
            self._task.cancel()
        if self._upstream is not None:
            # Closing the replica's connection tells it to stop generating.
            self._upstream.close()
        self._finish(CLIENT_CLOSED)

    def pause(self) -> None:
        """The client's connection is full: stop reading the replica's answer."""
        self._paused = True
        if self._upstream is not None:
            self._upstream.pause()

    def resume(self) -> None:
        """The client's connection drained: read the replica's answer again."""
        self._paused = False
        if self._upstream is not None:
            self._upstream.resume()

    # from the replica (UpstreamListener)

    def upstream_head(self, connection: UpstreamConnection) -> None:  # noqa: D102
        url = self._url
        assert url is not None
        # Any status will do: the replica is reachable, which is all ejection is about.
        self._proxy.ejections.restore(url)
        self._answering = True
        self._status = connection.status
        self._client.respond(connection.status, response_headers(connection.headers))
        if self._paused:
            connection.pause()

    def upstream_data(self, data: bytes) -> None:  # noqa: D102
        if self._first:
            self._first = False
            self._proxy.metrics.first_byte(time.monotonic() - self._started)
        self._client.write(data)

    def upstream_flush(self) -> None:  # noqa: D102
        self._client.flush()

    def upstream_end(self, connection: UpstreamConnection) -> None:  # noqa: D102
        self._finish(self._status)
        self._client.end()

    def upstream_failed(self, connection: UpstreamConnection, error: UpstreamError) -> None:  # noqa: D102
        proxy = self._proxy
        if self._answering:
            proxy.metrics.error("stream")
            log.error("replica %s failed mid-response: %r", self._url, error)
            self._finish(self._status)
            self._client.abort()
            return
        self._upstream = None
        proxy.pool.release(connection)
        if connection.reused and not connection.received_any \
                and not isinstance(error, UpstreamTimeout):
            # Closed by the replica while idle in the pool: not the replica's fault.
            # A new connection is not "reused", so this happens once per replica.
            self._task = asyncio.ensure_future(self._connect())
            return
        self._failed_before_answer(error)

    # internals

    async def _hold(self, hold_s: float) -> None:
        """Wait for the first replica, at most ``hold_s`` from the request's arrival."""
        proxy = self._proxy
        proxy.stats.waiting += 1
        try:
            ready = await proxy.watcher.wait_for_replicas(
                self._started + hold_s - time.monotonic())
        finally:  # also when cancelled because the client left
            proxy.stats.waiting -= 1
        self._task = None
        if ready is None:
            self._unavailable(f"waited {hold_s:g} s for a replica to start; "
                              + proxy.not_ready_hint())
        else:
            self._seek(ready)

    def _seek(self, view: ReplicaView) -> None:
        """Prepare what every replica gets, then try the first one."""
        proxy = self._proxy
        self._policy = proxy.policy_for(view)
        self._key = request_key(header_value(self.headers, SESSION_HEADER_NAME), self.body) \
            if isinstance(self._policy, ConsistentHash) else None
        self._tail = request_head_tail(self.headers, self.method, self.peer, self.body)
        self._remaining = list(view.urls)
        self._tried: list[str] = []
        self._last_error: BaseException | None = None
        self._try_next()

    def _slot_granted(self) -> bool:
        if self.done:
            return False
        self._has_slot = True
        self._try_next()
        return True

    def _try_next(self) -> None:
        """Send the request to the next replica in the policy's order.

        Replicas ejected after a recent failure are tried only after the others.
        """
        proxy = self._proxy
        if not self._has_slot:
            if not proxy.pool.claim_slot(self._slot_granted):
                return  # _slot_granted carries on
            self._has_slot = True
        remaining = self._remaining
        if not remaining:
            # The addresses and the error are the operator's to read, in the log;
            # the client learns what happened and what to do.
            log.warning("every ready replica failed before answering %s %s (tried %s; "
                        "last error: %r)", self.method, self.target.decode("latin-1"),
                        ", ".join(self._tried), self._last_error)
            self._unavailable(f"every ready replica failed before answering (tried "
                              f"{len(self._tried)}); retry in a moment")
            return
        # The policy chooses among the replicas not ejected, while any remain.
        preferred = proxy.ejections.preferred(remaining)
        url = self._policy.choose(preferred, self._key) or preferred[0]
        remaining.remove(url)
        self._tried.append(url)
        self._url = url
        self._origin = origin = origin_of(url)
        proxy.in_flight.acquire(url)
        connection = proxy.pool.idle_connection(origin)
        if connection is None:
            self._task = asyncio.ensure_future(self._connect())
        else:
            self._send(connection)

    async def _connect(self) -> None:
        try:
            connection = await self._proxy.pool.connect(self._origin)
        except RETRYABLE as error:
            self._task = None
            self._failed_before_answer(error)
            return
        self._task = None
        if self.done:  # the client left while it connected
            self._proxy.pool.release(connection)
            return
        self._send(connection)

    def _send(self, connection: UpstreamConnection) -> None:
        origin = self._origin
        self._upstream = connection
        connection.start(self, b"".join((
            self.method.encode("latin-1"), b" ", origin.base_path, self.target,
            b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n", self._tail)),
            self.body, self.method == "HEAD")

    def _failed_before_answer(self, error: BaseException) -> None:
        proxy = self._proxy
        url = self._url
        assert url is not None
        self._url = None
        proxy.in_flight.release(url)
        proxy.metrics.error("connect")
        proxy.ejections.eject(url)
        log.info("replica %s failed before answering (%r); trying another, and it "
                 "only after the others for %g s", url, error, EJECT_S)
        self._last_error = error
        self._try_next()

    def _unavailable(self, hint: str) -> None:
        self._proxy.metrics.error("no_replica")
        self._finish(503)
        reply_json(self._client, 503, error_document(503, "no ready replica", "no_ready_replica",
                                                     hint))

    def _finish(self, status: int) -> None:
        """Settle the request's accounting, exactly once however it ended."""
        if self.done:
            return
        self.done = True
        proxy = self._proxy
        if self._upstream is not None:
            proxy.pool.release(self._upstream)
            self._upstream = None
        if self._url is not None:
            proxy.in_flight.release(self._url)
        if self._has_slot:
            self._has_slot = False
            proxy.pool.release_slot()
        proxy.metrics.observe(status, time.monotonic() - self._started)


def reply_json(client: Client, status: int, document: Any,
               headers: list[tuple[bytes, bytes]] | tuple = ()) -> None:
    """Answer ``status`` with ``document`` as a JSON body, in one response."""
    head, body = json_reply(document, headers)
    client.respond(status, head)
    client.write(body)
    client.end()


class Proxy:
    """This worker's proxying: replicas, policy, pool and accounting; a raw ASGI app too.

    As an ASGI app it relays every path outside ``/-/`` (for ASGI servers
    other than the router's own workers, whose protocol drives exchanges itself).
    """

    def __init__(self, settings: RouterSettings, watcher: ReplicaWatcher, in_flight: InFlight,
                 metrics: RouterMetrics, stats: WorkerStats) -> None:
        self.settings = settings
        self.watcher = watcher
        self.in_flight = in_flight
        self.metrics = metrics
        self.stats = stats
        self.ejections = Ejections()
        self._pool: UpstreamPool | None = None
        self._policy_name = DEFAULT_POLICY
        self._policy = make_policy(DEFAULT_POLICY, in_flight)

    async def start(self) -> None:
        """Open this worker's connection pool (inside the worker's event loop)."""
        self._pool = UpstreamPool(self.settings.connect_timeout_s,
                                  self.settings.upstream_idle_timeout_s)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.close()

    @property
    def pool(self) -> UpstreamPool:
        """The connection pool (open once :meth:`start` ran)."""
        assert self._pool is not None, "Proxy.start() was not awaited"
        return self._pool

    def policy_for(self, view: ReplicaView) -> LoadBalancingPolicy:
        """The policy the view names (the default one, warned about, if unknown)."""
        if view.load_balancing_policy != self._policy_name:
            self._policy_name = view.load_balancing_policy
            try:
                self._policy = make_policy(self._policy_name, self.in_flight)
            except KeyError:
                log.warning("unknown load_balancing_policy %r; using %s",
                            self._policy_name, DEFAULT_POLICY)
                self._policy = make_policy(DEFAULT_POLICY, self.in_flight)
        return self._policy

    def not_ready_hint(self) -> str:
        """Why no replica answers yet, in words for the client.

        It names no address (the controller's is internal); a router started
        without a replica source says so, as that is its operator's to fix.
        """
        settings = self.settings
        if not (settings.controller_url or settings.replicas_file):
            return settings.source_description
        return ("no replica is ready yet (starting, or all failed); retry in a moment, "
                "or see the replicas with 'skyk serve status'")

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        """Relay one request (an ASGI ``http`` scope) to a replica and stream its answer back."""
        client = AsgiClient()
        # Any iterables in ASGI; read more than once here.
        headers = [(name, value) for name, value in scope["headers"]]
        exchange = Exchange(self, client, scope["method"], request_target(scope), headers,
                            client_address(scope.get("client")))
        client.exchange = exchange
        # Read whole: a retry must be able to send the body again.
        body = []
        more = has_body(headers)
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
        # The client leaving ends the exchange whenever it happens.
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        watch.add_done_callback(lambda task: task.cancelled() or client.client_left())
        try:
            exchange.begin(b"".join(body))
            await client.relay(send)
        finally:
            watch.cancel()
            exchange.client_left()  # a no-op unless the relay broke off


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class AsgiClient:
    """The client side of an exchange on the ASGI path: ASGI messages, sent by the app's task.

    The exchange's callbacks queue the messages; :meth:`relay` sends them.
    """

    def __init__(self) -> None:
        self.exchange: Exchange | None = None
        self._messages: collections.deque[dict | None] = collections.deque()
        self._queued = 0
        self._wakeup: asyncio.Future | None = None
        self._ended = False

    def respond(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:  # noqa: D102
        # ASGI wants header names in lower case; a replica's may not be.
        self._push({"type": "http.response.start", "status": status,
                    "headers": [(name.lower(), value) for name, value in headers]})

    def write(self, data: bytes) -> None:  # noqa: D102
        self._queued += len(data)
        if self._queued > ASGI_HIGH_WATER and self.exchange is not None:
            self.exchange.pause()
        self._push({"type": "http.response.body", "body": data, "more_body": True})

    def flush(self) -> None:  # noqa: D102
        pass  # each message is sent as soon as the app's task runs

    def end(self) -> None:  # noqa: D102
        self._ended = True
        self._push({"type": "http.response.body", "body": b""})

    def abort(self) -> None:  # noqa: D102
        self._ended = True
        self._push(None)

    def client_left(self) -> None:
        """The client closed its connection: end the exchange and the relay."""
        self._ended = True
        if self.exchange is not None:
            self.exchange.client_left()
        self._wake()

    def _push(self, message: dict | None) -> None:
        self._messages.append(message)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def relay(self, send: Send) -> None:
        """Send the queued messages as they come, until the answer ends."""
        messages = self._messages
        while True:
            while messages:
                message = messages.popleft()
                if message is None:
                    # uvicorn closes the client's connection: the client sees the truncation.
                    raise UpstreamBroke("the replica failed mid-response")
                if message["type"] == "http.response.body":
                    self._queued -= len(message["body"])
                await send(message)
                if self._queued <= ASGI_HIGH_WATER and self.exchange is not None:
                    self.exchange.resume()
            if self._ended:
                return
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup

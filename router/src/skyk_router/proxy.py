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

The proxy is a raw ASGI app (:class:`~skyk_router.app.RouterApp` hands it
every proxied request) and talks to the replicas through
:mod:`skyk_router.upstream`; every request pays for what runs here, so this
path keeps its work to what the features above need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from skyk.serve.policies import LoadBalancingPolicy

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
    has_body,
    header_value,
    request_head_tail,
    request_target,
    response_headers,
)
from skyk_router.metrics import RouterMetrics
from skyk_router.replicas import DEFAULT_POLICY, ReplicaView, ReplicaWatcher
from skyk_router.replies import Receive, Send, send_json
from skyk_router.settings import RouterSettings
from skyk_router.stats import WorkerStats
from skyk_router.upstream import UpstreamConnection, UpstreamPool, origin_of

log = logging.getLogger(__name__)

#: Failures that happen before a replica's first byte, and so may be retried:
#: refused or reset connections, TLS failures, timeouts (UpstreamError is an OSError).
RETRYABLE = (OSError, asyncio.TimeoutError)
SESSION_HEADER_NAME = SESSION_HEADER.lower().encode("latin-1")
#: Seconds into a request before the proxy starts watching for its client leaving.
#: Most answers of a fast replica come sooner, and so never pay for the watch
#: (a task waiting on ``receive``); a client leaving is noticed at most this late.
WATCH_AFTER_S = 0.05


class UpstreamBroke(RuntimeError):
    """A replica failed after its first byte; the client's connection is aborted."""


class NoReplicaAnswered(Exception):
    """Every replica tried failed before its first byte."""

    def __init__(self, tried: list[str], last_error: BaseException) -> None:
        super().__init__(f"tried {', '.join(tried)}; last error: {last_error!r}")
        self.tried = tried


class NoReplicaStarted(Exception):
    """A held request's ``hold_s`` passed without a replica becoming ready."""

    def __init__(self, hold_s: float) -> None:
        super().__init__(f"no replica became ready within {hold_s:g} s")
        self.hold_s = hold_s


class ClientLeft(Exception):
    """The client closed its connection while its request body was being read."""


async def read_body(receive: Receive) -> bytes:
    """The whole request body (chunked or not: the server has undone the framing)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client closes its connection (after the request's own events)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientWatch:
    """Calls ``on_leave`` if the client closes its connection, from :data:`WATCH_AFTER_S` on.

    ``on_leave`` changes as the request goes on: while a replica is sought it
    cancels the request's task, while the answer streams it closes the
    replica's connection.
    """

    def __init__(self, receive: Receive, on_leave: Callable[[], object]) -> None:
        self.on_leave = on_leave
        #: Whether the client left.
        self.left = False
        self._receive = receive
        self._task: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = \
            asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(wait_for_disconnect(self._receive))
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Future) -> None:
        if not task.cancelled():
            self.left = True
            self.on_leave()

    def stop(self) -> None:
        """Stop watching (the request is over)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class Proxy:
    """The raw ASGI app that relays every path outside ``/-/`` to a ready replica."""

    def __init__(self, settings: RouterSettings, watcher: ReplicaWatcher, in_flight: InFlight,
                 metrics: RouterMetrics, stats: WorkerStats) -> None:
        self._settings = settings
        self._watcher = watcher
        self._in_flight = in_flight
        self._metrics = metrics
        self._stats = stats
        self._pool: UpstreamPool | None = None
        self._policy_name = DEFAULT_POLICY
        self._policy = make_policy(DEFAULT_POLICY, in_flight)
        self._ejections = Ejections()

    async def start(self) -> None:
        """Open this worker's connection pool (inside the worker's event loop)."""
        self._pool = UpstreamPool(self._settings.connect_timeout_s,
                                  self._settings.upstream_idle_timeout_s)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.close()

    def _policy_for(self, view: ReplicaView) -> LoadBalancingPolicy:
        if view.load_balancing_policy != self._policy_name:
            self._policy_name = view.load_balancing_policy
            try:
                self._policy = make_policy(self._policy_name, self._in_flight)
            except KeyError:
                log.warning("unknown load_balancing_policy %r; using %s",
                            self._policy_name, DEFAULT_POLICY)
                self._policy = make_policy(DEFAULT_POLICY, self._in_flight)
        return self._policy

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        """Relay one request (an ASGI ``http`` scope) to a replica and stream its answer back."""
        started = time.monotonic()
        # Counted on arrival (held requests too): the autoscaler sizes for demand.
        self._stats.rate.record()
        try:
            # Read whole: a retry must be able to send the body again.
            body = await read_body(receive) if has_body(scope["headers"]) else b""
        except ClientLeft:
            self._metrics.observe(499, time.monotonic() - started)
            return
        view = self._watcher.view
        if not view.urls and not view.hold_s:
            await self._unavailable(send, started, self._not_ready_hint())
            return
        # The client leaving cancels this task while it seeks a replica (or holds,
        # waiting for one), as asyncio.timeout() does: a task of its own would
        # cost every request.
        task = asyncio.current_task()
        assert task is not None
        watch = ClientWatch(receive, task.cancel)
        try:
            url, upstream = await self._open(scope, body, started)
        except asyncio.CancelledError:
            watch.stop()
            if not watch.left:
                raise  # cancelled for another reason: the server is stopping
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled
                task.uncancel()
            self._metrics.observe(499, time.monotonic() - started)  # nginx's "client closed"
            return
        except NoReplicaAnswered as error:
            watch.stop()
            await self._unavailable(
                send, started, f"every ready replica failed before answering ({error})")
            return
        except NoReplicaStarted as error:
            watch.stop()
            await self._unavailable(send, started, f"waited {error.hold_s:g} s for a replica "
                                    "to start; " + self._not_ready_hint())
            return
        except BaseException:
            watch.stop()
            raise
        relay = Relay(upstream, url, started, watch, self._metrics, self._finish)
        try:
            await relay.run(send)
        finally:
            relay.close()

    def _finish(self, url: str, upstream: UpstreamConnection) -> None:
        assert self._pool is not None
        self._pool.release(upstream)
        self._in_flight.release(url)

    async def _hold(self, started: float) -> ReplicaView:
        """The view, once it lists a replica; wait for one while it does not.

        The wait lasts at most the view's ``hold_s`` from the request's arrival
        (``started``); past it, raise :class:`NoReplicaStarted`.
        """
        view = self._watcher.view
        if view.urls:
            return view
        self._stats.waiting += 1
        try:
            ready = await self._watcher.wait_for_replicas(
                started + view.hold_s - time.monotonic())
        finally:  # also when cancelled because the client left
            self._stats.waiting -= 1
        if ready is None:
            raise NoReplicaStarted(view.hold_s)
        return ready

    async def _open(self, scope: dict, body: bytes,
                    started: float) -> tuple[str, UpstreamConnection]:
        """Send the request to replicas in the policy's order until one answers.

        Replicas ejected after a recent failure are tried only after the others.
        """
        pool = self._pool
        assert pool is not None, "Proxy.start() was not awaited"
        view = await self._hold(started)
        policy = self._policy_for(view)
        key = request_key(header_value(scope["headers"], SESSION_HEADER_NAME), body) \
            if isinstance(policy, ConsistentHash) else None
        method = scope["method"]
        request_line = method.encode("latin-1") + b" "
        target = request_target(scope) + b" HTTP/1.1\r\nhost: "
        tail = request_head_tail(scope, body)
        head_only = method == "HEAD"
        remaining = list(view.urls)
        tried: list[str] = []
        last_error: BaseException | None = None
        while remaining:
            # The policy chooses among the replicas not ejected, while any remain.
            preferred = self._ejections.preferred(remaining)
            url = policy.choose(preferred, key) or preferred[0]
            remaining.remove(url)
            tried.append(url)
            origin = origin_of(url)
            self._in_flight.acquire(url)
            try:
                upstream = await pool.send(
                    origin, b"".join((request_line, origin.base_path, target,
                                      origin.host_header, b"\r\n", tail)),
                    body, head_only)
            except RETRYABLE as error:
                self._in_flight.release(url)
                self._metrics.error("connect")
                self._ejections.eject(url)
                log.info("replica %s failed before answering (%r); trying another, and it "
                         "only after the others for %g s", url, error, EJECT_S)
                last_error = error
                continue
            except BaseException:
                self._in_flight.release(url)
                raise
            # Any status will do: the replica is reachable, which is all ejection is about.
            self._ejections.restore(url)
            return url, upstream
        raise NoReplicaAnswered(tried, last_error or RuntimeError("no replica chosen"))

    def _not_ready_hint(self) -> str:
        return (f"no replica is ready yet; the router reads them from "
                f"{self._settings.source_description} every {self._settings.poll_interval_s:g} s")

    async def _unavailable(self, send: Send, started: float, hint: str) -> None:
        self._metrics.error("no_replica")
        self._metrics.observe(503, time.monotonic() - started)
        await send_json(send, 503, {"error": "no ready replica", "hint": hint})


class Relay:
    """The response: the replica's status, headers and chunks, passed on as they arrive.

    :meth:`run` sends them; :meth:`close` settles the request's accounting
    exactly once, however the relay ended.
    """

    def __init__(self, upstream: UpstreamConnection, url: str, started: float,
                 watch: ClientWatch, metrics: RouterMetrics,
                 finish: Callable[[str, UpstreamConnection], None]) -> None:
        self._upstream = upstream
        self._url = url
        self._started = started
        self._metrics = metrics
        self._finish = finish
        self._closed = False
        self._client_left = False
        self._watch = watch
        watch.on_leave = self._on_client_gone

    def _on_client_gone(self) -> None:
        self._client_left = True
        # Closing the upstream connection wakes a read blocked on a silent replica
        # and tells the replica to stop generating.
        self._upstream.close()

    async def run(self, send: Send) -> None:
        """Send the replica's answer to the client, chunk by chunk as it arrives."""
        upstream = self._upstream
        await send({"type": "http.response.start", "status": upstream.status,
                    "headers": response_headers(upstream.headers)})
        first = True
        while not self._client_left:
            try:
                chunk = await upstream.read()
            except OSError as error:
                if self._client_left:
                    return
                self._metrics.error("stream")
                # "from None": the message names the cause; uvicorn logs the traceback anyway.
                raise UpstreamBroke(
                    f"replica {self._url} failed mid-response: {error!r}") from None
            if not chunk:
                break
            if first:
                first = False
                self._metrics.time_to_first_byte.observe(time.monotonic() - self._started)
            # The last chunk ends the response itself: one message fewer per answer.
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": not upstream.complete})
            if upstream.complete:
                return
        if not self._client_left:
            await send({"type": "http.response.body", "body": b""})

    def close(self) -> None:
        """Release the upstream connection and count the request as finished."""
        if self._closed:
            return
        self._closed = True
        self._watch.stop()
        self._finish(self._url, self._upstream)
        status = 499 if self._client_left else self._upstream.status
        self._metrics.observe(status, time.monotonic() - self._started)

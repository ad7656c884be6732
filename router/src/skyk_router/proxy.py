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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import falcon
import falcon.asgi
from skyk.serve.policies import LoadBalancingPolicy
from yarl import URL

from skyk_router.balancing import (
    EJECT_S,
    SESSION_HEADER,
    ConsistentHash,
    Ejections,
    InFlight,
    make_policy,
    request_key,
)
from skyk_router.metrics import RouterMetrics
from skyk_router.replicas import DEFAULT_POLICY, ReplicaView, ReplicaWatcher
from skyk_router.settings import RouterSettings
from skyk_router.stats import WorkerStats

log = logging.getLogger(__name__)

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade"})
#: Also dropped from requests: aiohttp sets Host and Content-Length for the new
#: connection, and the body is already read, so there is nothing to continue.
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
#: Failures that happen before a replica's first byte, and so may be retried.
RETRYABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
#: Concurrent upstream connections per worker: room for ~1000 streams.
POOL_SIZE = 1024


class ProxyRequest(falcon.asgi.Request):
    """A Falcon request that keeps the ASGI ``receive`` callable.

    The proxy waits on it for ``http.disconnect`` to learn that the client
    went away, which Falcon does not report for streamed responses.
    """

    __slots__ = ("asgi_receive",)

    def __init__(self, scope: dict, receive: Any, first_event: dict | None = None,
                 options: falcon.request.RequestOptions | None = None) -> None:
        super().__init__(scope, receive, first_event=first_event, options=options)
        self.asgi_receive = receive


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


async def wait_for_disconnect(receive: Any) -> None:
    """Return when the client closes its connection (the request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def forwarded_headers(raw: list[tuple[bytes, bytes]], client: str | None) -> list[tuple[str, str]]:
    """The client's request headers to send upstream, without hop-by-hop ones."""
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    # Headers named in Connection are hop-by-hop too.
    dropped = set(NOT_FORWARDED)
    for name, value in headers:
        if name.lower() == "connection":
            dropped.update(token.strip().lower() for token in value.split(","))
    kept = [(name, value) for name, value in headers if name.lower() not in dropped]
    if client:
        previous = [value for name, value in kept if name.lower() == "x-forwarded-for"]
        kept = [(name, value) for name, value in kept if name.lower() != "x-forwarded-for"]
        kept.append(("X-Forwarded-For", ", ".join([*previous, client])))
    return kept


class Proxy:
    """The sink that relays every path outside ``/-/`` to a ready replica."""

    def __init__(self, settings: RouterSettings, watcher: ReplicaWatcher, in_flight: InFlight,
                 metrics: RouterMetrics, stats: WorkerStats) -> None:
        self._settings = settings
        self._watcher = watcher
        self._in_flight = in_flight
        self._metrics = metrics
        self._stats = stats
        self._session: aiohttp.ClientSession | None = None
        self._policy_name = DEFAULT_POLICY
        self._policy = make_policy(DEFAULT_POLICY, in_flight)
        self._ejections = Ejections()

    async def start(self) -> None:
        """Open this worker's connection pool (inside the worker's event loop)."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._settings.connect_timeout_s,
                sock_read=self._settings.upstream_idle_timeout_s),
            # Bytes pass through untouched: no decompression, no added headers, no
            # cookies remembered from one client for the next.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

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

    def _begin(self, url: str) -> None:
        self._in_flight.acquire(url)
        self._metrics.in_flight.labels(url).inc()

    def _end(self, url: str) -> None:
        self._in_flight.release(url)
        self._metrics.in_flight.labels(url).dec()

    async def __call__(self, req: ProxyRequest, resp: falcon.asgi.Response, **_: Any) -> None:
        """Relay ``req`` to a replica and stream its answer into ``resp``."""
        started = time.monotonic()
        # Counted on arrival (held requests too): the autoscaler sizes for demand.
        self._stats.rate.record()
        # Read whole: a retry must be able to send the body again.
        body = await req.stream.read()
        view = self._watcher.view
        if not view.urls and not view.hold_s:
            self._unavailable(resp, started, self._not_ready_hint())
            return
        client_gone = asyncio.ensure_future(wait_for_disconnect(req.asgi_receive))
        # A held request waits inside _open, so a client leaving ends its wait too.
        opening = asyncio.ensure_future(self._open(req, body, started))
        try:
            await asyncio.wait((opening, client_gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not opening.done():  # the client left (or this task was cancelled) first
                opening.cancel()
                client_gone.cancel()
                with contextlib.suppress(asyncio.CancelledError, NoReplicaAnswered):
                    await opening
                self._metrics.observe(499, time.monotonic() - started)  # nginx's "client closed"
        if opening.cancelled():
            return
        try:
            url, upstream = opening.result()
        except NoReplicaAnswered as error:
            client_gone.cancel()
            self._unavailable(resp, started, f"every ready replica failed before answering ({error})")
            return
        except NoReplicaStarted as error:
            client_gone.cancel()
            self._unavailable(resp, started, f"waited {error.hold_s:g} s for a replica to start; "
                              + self._not_ready_hint())
            return
        except BaseException:
            client_gone.cancel()
            raise
        resp.status = upstream.status
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                resp.append_header(name, value)
        resp.stream = Relay(upstream, url, started, client_gone, self._metrics, self._end)

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

    async def _open(self, req: ProxyRequest, body: bytes,
                    started: float) -> tuple[str, aiohttp.ClientResponse]:
        """Send the request to replicas in the policy's order until one answers.

        Replicas ejected after a recent failure are tried only after the others.
        """
        assert self._session is not None, "Proxy.start() was not awaited"
        view = await self._hold(started)
        policy = self._policy_for(view)
        key = request_key(req.get_header(SESSION_HEADER), body) \
            if isinstance(policy, ConsistentHash) else None
        headers = forwarded_headers(req.scope["headers"], req.remote_addr)
        target = req.scope.get("raw_path") or req.path.encode()
        if req.scope.get("query_string"):
            target += b"?" + req.scope["query_string"]
        remaining = list(view.urls)
        tried: list[str] = []
        last_error: BaseException | None = None
        while remaining:
            # The policy chooses among the replicas not ejected, while any remain.
            preferred = self._ejections.preferred(remaining)
            url = policy.choose(preferred, key) or preferred[0]
            remaining.remove(url)
            tried.append(url)
            self._begin(url)
            try:
                # encoded=True: the client's path and query reach the replica byte for byte.
                upstream = await self._session.request(
                    req.method, URL(url + target.decode("latin-1"), encoded=True),
                    headers=headers, data=body or None, allow_redirects=False)
            except RETRYABLE as error:
                self._end(url)
                self._metrics.errors.labels("connect").inc()
                self._ejections.eject(url)
                log.info("replica %s failed before answering (%r); trying another, and it "
                         "only after the others for %g s", url, error, EJECT_S)
                last_error = error
                continue
            except BaseException:
                self._end(url)
                raise
            # Any status will do: the replica is reachable, which is all ejection is about.
            self._ejections.restore(url)
            return url, upstream
        raise NoReplicaAnswered(tried, last_error or RuntimeError("no replica chosen"))

    def _not_ready_hint(self) -> str:
        return (f"no replica is ready yet; the router reads them from "
                f"{self._settings.source_description} every {self._settings.poll_interval_s:g} s")

    def _unavailable(self, resp: falcon.asgi.Response, started: float, hint: str) -> None:
        self._metrics.errors.labels("no_replica").inc()
        self._metrics.observe(503, time.monotonic() - started)
        resp.status = falcon.HTTP_503
        resp.media = {"error": "no ready replica", "hint": hint}


class Relay:
    """The response body: the replica's chunks, passed on as they arrive.

    Falcon iterates it and then awaits :meth:`close`, which settles the
    request's accounting exactly once, however the stream ended.
    """

    def __init__(self, upstream: aiohttp.ClientResponse, url: str, started: float,
                 client_gone: asyncio.Future, metrics: RouterMetrics,
                 release: Callable[[str], None]) -> None:
        self._upstream = upstream
        self._url = url
        self._started = started
        self._metrics = metrics
        self._release = release
        self._first = True
        self._closed = False
        self._client_left = False
        self._client_gone = client_gone
        client_gone.add_done_callback(self._on_client_gone)

    def _on_client_gone(self, future: asyncio.Future) -> None:
        if future.cancelled():  # cancelled by close(): the response was complete
            return
        self._client_left = True
        # Closing the upstream connection wakes a read blocked on a silent replica
        # and tells the replica to stop generating.
        self._upstream.close()

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        if self._client_left:
            raise StopAsyncIteration
        try:
            chunk = await self._upstream.content.readany()
        except RETRYABLE + (aiohttp.ClientPayloadError,) as error:
            if self._client_left:
                raise StopAsyncIteration from None
            self._metrics.errors.labels("stream").inc()
            # "from None": the message names the cause; uvicorn logs the traceback anyway.
            raise UpstreamBroke(f"replica {self._url} failed mid-response: {error!r}") from None
        if not chunk:
            raise StopAsyncIteration
        if self._first:
            self._first = False
            self._metrics.time_to_first_byte.observe(time.monotonic() - self._started)
        return chunk

    async def close(self) -> None:
        """Release the upstream connection and count the request as finished."""
        if self._closed:
            return
        self._closed = True
        self._client_gone.cancel()
        self._upstream.release()
        self._release(self._url)
        status = 499 if self._client_left else self._upstream.status
        self._metrics.observe(status, time.monotonic() - self._started)

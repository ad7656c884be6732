"""The router's ASGI application, built by a factory.

A Falcon app answers the router's own ``/-/health``, ``/-/stats`` and
``/-/chat`` (a chat page for the API), and Prometheus ``/metrics``. Every
other path is proxied to a ready replica, and those requests bypass Falcon.
In the router's gunicorn workers they never become ASGI requests at all:
:class:`~skyk_router.protocol.RouterProtocol` hands them to the app's
:class:`~skyk_router.proxy.Proxy` as they are parsed. Under any other ASGI
server (and in tests' ASGI clients), :class:`RouterApp` hands them to the
same proxy as a raw ASGI app, without Falcon's request and response objects.
Each worker process builds one app; its lifespan (startup/shutdown) opens
the upstream connection pool and runs the replica poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import falcon
import falcon.asgi

from skyk_router.balancing import InFlight
from skyk_router.chat.page import PAGE_PATH, ChatPageResource
from skyk_router.metrics import MetricsResource, RouterMetrics
from skyk_router.proxy import Proxy
from skyk_router.replicas import ControllerSource, FileSource, ReplicaWatcher
from skyk_router.replies import Receive, Send, error_document
from skyk_router.settings import RouterSettings
from skyk_router.stats import StatsResource, WorkerStats

log = logging.getLogger(__name__)

#: The router's liveness path. Its own paths live under ``/-/`` so they never
#: shadow a path of the model API behind it.
HEALTH_PATH = "/-/health"
STATS_PATH = "/-/stats"
METRICS_PATH = "/metrics"
#: The router's own paths start so; every other path, but METRICS_PATH, goes to a replica.
ROUTER_PATH_PREFIX = "/-/"


def is_proxied(path: str) -> bool:
    """Whether requests for ``path`` go to a replica (all but the router's own paths)."""
    return not path.startswith(ROUTER_PATH_PREFIX) and path != METRICS_PATH


class HealthResource:
    """Answers whether the router process is up (not whether replicas are)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Reply 200 with ``{"status": "ok"}``."""
        resp.media = {"status": "ok"}


def serialize_error(req: falcon.asgi.Request, resp: falcon.asgi.Response,
                    exception: falcon.HTTPError) -> None:
    """Write Falcon's errors (an unknown router path, a wrong method) in OpenAI's error shape."""
    status = exception.status_code
    # "404 Not Found" reads "Not Found" in the message and "not_found" as the code.
    phrase = str(exception.title or exception.status).removeprefix(f"{status} ")
    message = f"{phrase}: {exception.description}" if exception.description else phrase
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(error_document(
        status, message, phrase.lower().replace(" ", "_"))).encode()


class Lifespan:
    """Falcon middleware for the worker's startup and shutdown."""

    def __init__(self, settings: RouterSettings, watcher: ReplicaWatcher, proxy: Proxy,
                 stats: WorkerStats, metrics: RouterMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._watcher = watcher
        self._proxy = proxy
        self._stats = stats
        self._poller: asyncio.Task | None = None

    async def process_startup(self, scope: dict, event: dict) -> None:
        """Open the pool, read the replicas once, then keep polling them."""
        await self._proxy.start()
        # Read before serving, so a fresh worker does not answer 503 needlessly.
        await self._refresh()
        self._poller = asyncio.create_task(self._poll())

    async def process_shutdown(self, scope: dict, event: dict) -> None:
        """Stop polling and close connections."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self._stats.withdraw()
        await self._watcher.aclose()
        await self._proxy.close()

    async def _refresh(self) -> None:
        await self._watcher.refresh()
        self._metrics.sync()
        try:
            self._stats.publish()
        except OSError as error:
            log.warning("cannot publish this worker's stats: %s", error)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.poll_interval_s)
            await self._refresh()


class RouterApp(falcon.asgi.App):
    """The Falcon app of the router's own paths, in front of the proxy.

    HTTP requests for any other path go to ``proxy`` without Falcon
    seeing them; lifespan, websocket and the router's paths go to Falcon.
    """

    __slots__ = ("proxy",)

    def __init__(self, proxy: Proxy, **options: Any) -> None:
        super().__init__(**options)
        #: The proxy of every path but the router's own (the worker's protocol finds it here).
        self.proxy = proxy

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:  # type: ignore[override]
        """Dispatch one ASGI connection: to the proxy, or to Falcon."""
        if scope["type"] == "http":
            if is_proxied(scope["path"]):
                await self.proxy(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: RouterSettings | None = None) -> falcon.asgi.App:
    """Build a new router application (settings from the environment by default).

    A factory rather than a module-level app, so tests get independent
    instances with their own settings; the only module-level app is the one
    :mod:`skyk_router.asgi` makes for gunicorn.
    """
    settings = settings or RouterSettings.from_env()
    if settings.controller_url:
        source: ControllerSource | FileSource | None = ControllerSource(settings.controller_url)
    elif settings.replicas_file:
        source = FileSource(settings.replicas_file)
    else:
        source = None
    watcher = ReplicaWatcher(source)
    in_flight = InFlight()
    metrics = RouterMetrics(in_flight, settings.metrics_dir)
    stats = WorkerStats(in_flight, settings.stats_dir, lambda: watcher.view)
    proxy = Proxy(settings, watcher, in_flight, metrics, stats)
    app = RouterApp(proxy, middleware=[Lifespan(settings, watcher, proxy, stats, metrics)])
    app.set_error_serializer(serialize_error)
    app.add_route(HEALTH_PATH, HealthResource())
    app.add_route(STATS_PATH, StatsResource(stats))
    app.add_route(METRICS_PATH, MetricsResource(metrics))
    chat_page = ChatPageResource()
    app.add_route(PAGE_PATH, chat_page)
    app.add_route(PAGE_PATH + "/{name}", chat_page, suffix="file")
    return app

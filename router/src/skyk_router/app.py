"""The router's Falcon ASGI application, built by a factory.

Routes: the router's own ``/-/health`` and ``/-/stats``, Prometheus
``/metrics``, and a sink that proxies every other path to a ready replica.
Each worker process builds one app; its lifespan (startup/shutdown) opens
the upstream connection pool and runs the replica poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import falcon
import falcon.asgi

from skyk_router.auth import ApiKeyMiddleware
from skyk_router.balancing import InFlight
from skyk_router.metrics import MetricsResource, RouterMetrics
from skyk_router.proxy import Proxy, ProxyRequest
from skyk_router.replicas import ControllerSource, FileSource, ReplicaWatcher
from skyk_router.settings import RouterSettings
from skyk_router.stats import StatsResource, WorkerStats

log = logging.getLogger(__name__)

#: The router's liveness path. Its own paths live under ``/-/`` so they never
#: shadow a path of the model API behind it.
HEALTH_PATH = "/-/health"
STATS_PATH = "/-/stats"
METRICS_PATH = "/metrics"
#: Everything but the router's own ``/-/`` paths goes to a replica.
PROXIED_PATHS = r"/(?!-/)"


class HealthResource:
    """Answers whether the router process is up (not whether replicas are)."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Reply 200 with ``{"status": "ok"}``."""
        resp.media = {"status": "ok"}


class Lifespan:
    """Falcon middleware for the worker's startup and shutdown."""

    def __init__(self, settings: RouterSettings, watcher: ReplicaWatcher, proxy: Proxy,
                 stats: WorkerStats) -> None:
        self._settings = settings
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
        try:
            self._stats.publish()
        except OSError as error:
            log.warning("cannot publish this worker's stats: %s", error)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.poll_interval_s)
            await self._refresh()


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
    metrics = RouterMetrics(settings.metrics_dir)
    stats = WorkerStats(in_flight, settings.stats_dir, lambda: watcher.view)
    proxy = Proxy(settings, watcher, in_flight, metrics, stats)
    app = falcon.asgi.App(
        request_type=ProxyRequest,
        middleware=[Lifespan(settings, watcher, proxy, stats),
                    ApiKeyMiddleware(lambda: watcher.view.api_keys_sha256)])
    app.add_route(HEALTH_PATH, HealthResource())
    app.add_route(STATS_PATH, StatsResource(stats))
    app.add_route(METRICS_PATH, MetricsResource(metrics))
    app.add_sink(proxy, prefix=PROXIED_PATHS)
    return app

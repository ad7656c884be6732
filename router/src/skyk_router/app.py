"""The router's Falcon application, built by a factory.

Only the router's own health check exists so far. Replica discovery,
proxying of streamed (SSE) completions and load-balancing policies arrive
with serving; they will be wired in here, in :func:`create_app`.
"""

from __future__ import annotations

import falcon

#: The router's own liveness path. Under ``/-/`` so it can never shadow a path
#: of the model API the router will proxy.
HEALTH_PATH = "/-/health"


class HealthResource:
    """Answers whether the router process is up (not whether replicas are)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Reply 200 with ``{"status": "ok"}``."""
        resp.media = {"status": "ok"}
        resp.status = falcon.HTTP_200


def create_app() -> falcon.App:
    """Build a new router application.

    A factory rather than a module-level app, so tests and future callers get
    independent instances with their own configuration; the only module-level
    app is the one :mod:`skyk_router.wsgi` makes for gunicorn.
    """
    app = falcon.App()
    app.add_route(HEALTH_PATH, HealthResource())
    return app

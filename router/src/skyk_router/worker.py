"""The gunicorn worker class of the router: uvicorn's, speaking HTTP with :mod:`skyk_router.protocol`."""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker


class RouterWorker(UvicornWorker):
    """A uvicorn worker (uvloop) whose HTTP protocol hands proxied requests to the proxy."""

    #: The protocol by name: uvicorn imports it in the worker. gunicorn loads this
    #: class in its master, which must not import prometheus_client (see gunicorn_conf).
    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": "skyk_router.protocol:RouterProtocol"}

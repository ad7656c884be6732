"""skyk's router: the HTTP front door of a served model.

A Falcon ASGI app run by gunicorn with uvicorn workers. Each worker learns
the ready replicas from the service controller (or a file), proxies every
request outside ``/-/`` to one of them under a load-balancing policy, streams
responses through as they arrive, and reports its load on ``/-/stats`` and
``/metrics``. See :mod:`skyk_router.app` for the parts.
"""

__version__ = "0.1.0"

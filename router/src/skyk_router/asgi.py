"""The ASGI entry point gunicorn's uvicorn workers load: ``skyk_router.asgi:app``."""

from __future__ import annotations

from skyk_router.app import create_app

app = create_app()

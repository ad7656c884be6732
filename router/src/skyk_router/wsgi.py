"""The WSGI entry point gunicorn loads: ``skyk_router.wsgi:app``."""

from __future__ import annotations

from skyk_router.app import create_app

app = create_app()

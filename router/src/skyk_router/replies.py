"""Complete answers the router writes itself (errors as JSON, in OpenAI's error shape)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: The ASGI callables: ``receive`` returns the next event, ``send`` takes one.
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def json_reply(document: Any, headers: Iterable[tuple[bytes, bytes]] = ()
               ) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of an answer carrying ``document`` as JSON."""
    body = json.dumps(document).encode()
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), *headers], body


def error_document(status: int, message: str, code: str,
                   hint: str | None = None) -> dict[str, Any]:
    """An error of HTTP ``status`` as OpenAI's API words it.

    ``{"error": {"message", "type", "param", "code"}}``: SDKs and chat clients
    read ``error.message``; ``hint`` (what to do about it) rides along in the
    same object. The type is OpenAI's: a 5xx is the server's trouble
    (``server_error``), anything else the request's (``invalid_request_error``).
    """
    error: dict[str, Any] = {
        "message": message,
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "param": None, "code": code}
    if hint:
        error["hint"] = hint
    return {"error": error}

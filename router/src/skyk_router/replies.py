"""Complete answers the router writes itself on the proxied path (errors as JSON)."""

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

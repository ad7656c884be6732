"""API keys: the controller lists the sha256 of each accepted key.

Only the model API behind the router is guarded: :class:`ApiKeyGuard` wraps
the proxy, and the router's own endpoints (``/-/health``, ``/-/stats``,
``/metrics``), which never reach the proxy, stay open: the controller that
polls them holds only the hashes, never a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from skyk_router.forwarding import header_value
from skyk_router.replies import Receive, Send, send_json


def key_matches(authorization: str | None, accepted_sha256: frozenset[str]) -> bool:
    """Whether an ``Authorization: Bearer KEY`` header carries an accepted key."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return False
    digest = hashlib.sha256(key.strip().encode()).hexdigest()
    # Compared against every hash, in constant time each, so timing tells nothing.
    matches = [hmac.compare_digest(digest, accepted) for accepted in accepted_sha256]
    return any(matches)


class ApiKeyGuard:
    """Raw ASGI middleware: 401 to a request without an accepted key, when keys are required."""

    def __init__(self, app: Callable[[dict, Receive, Send], Awaitable[None]],
                 accepted_sha256: Callable[[], frozenset[str] | None]) -> None:
        self._app = app
        # A callable: the accepted keys change whenever the controller says so.
        self._accepted = accepted_sha256

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        """Pass the request on, unless keys are required and it carries no accepted one."""
        accepted = self._accepted()
        if accepted is None:
            await self._app(scope, receive, send)
            return
        if key_matches(header_value(scope["headers"], b"authorization"), accepted):
            await self._app(scope, receive, send)
            return
        await send_json(send, 401, {"error": "invalid or missing API key",
                                    "hint": "send the header 'Authorization: Bearer <your key>'"},
                        [(b"www-authenticate", b"Bearer")])

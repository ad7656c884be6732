"""API keys: the controller lists the sha256 of each accepted key.

Only the model API behind the router is guarded. The router's own endpoints
(``/-/health``, ``/-/stats``, ``/metrics``) stay open: the controller that
polls them holds only the hashes, never a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import falcon

#: Paths answered without a key.
OPEN_PATH_PREFIXES = ("/-/", "/metrics")


def key_matches(authorization: str | None, accepted_sha256: frozenset[str]) -> bool:
    """Whether an ``Authorization: Bearer KEY`` header carries an accepted key."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return False
    digest = hashlib.sha256(key.strip().encode()).hexdigest()
    # Compared against every hash, in constant time each, so timing tells nothing.
    matches = [hmac.compare_digest(digest, accepted) for accepted in accepted_sha256]
    return any(matches)


class ApiKeyMiddleware:
    """Answers 401 to a proxied request without an accepted key, when keys are required."""

    def __init__(self, accepted_sha256: Callable[[], frozenset[str] | None]) -> None:
        # A callable: the accepted keys change whenever the controller says so.
        self._accepted = accepted_sha256

    async def process_request(self, req: falcon.asgi.Request,
                              resp: falcon.asgi.Response) -> None:
        """Stop the request with 401 unless it is open or carries an accepted key."""
        accepted = self._accepted()
        if accepted is None or req.path.startswith(OPEN_PATH_PREFIXES):
            return
        if key_matches(req.get_header("Authorization"), accepted):
            return
        resp.status = falcon.HTTP_401
        resp.set_header("WWW-Authenticate", "Bearer")
        resp.media = {"error": "invalid or missing API key",
                      "hint": "send the header 'Authorization: Bearer <your key>'"}
        resp.complete = True

"""API keys: the controller lists the sha256 of each accepted key.

Only the model API behind the router is guarded: the proxy checks each
request's key with :func:`key_matches`, and the router's own endpoints
(``/-/health``, ``/-/stats``, ``/metrics``), which never reach the proxy, stay
open: the controller that polls them holds only the hashes, never a key.
"""

from __future__ import annotations

import hashlib
import hmac


def key_matches(authorization: str | None, accepted_sha256: frozenset[str]) -> bool:
    """Whether an ``Authorization: Bearer KEY`` header carries an accepted key."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return False
    digest = hashlib.sha256(key.strip().encode()).hexdigest()
    # Compared against every hash, in constant time each, so timing tells nothing.
    matches = [hmac.compare_digest(digest, accepted) for accepted in accepted_sha256]
    return any(matches)

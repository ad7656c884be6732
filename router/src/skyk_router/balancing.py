"""Load-balancing policies built into the router, and the in-flight counts they use.

The policies implement :class:`skyk.serve.policies.LoadBalancingPolicy`; each
gunicorn worker holds its own instances, so ``least_load`` balances the
requests of its worker, and ``consistent_hash`` needs no coordination because
its ring is a pure function of the replica URLs.

:class:`Ejections` remembers, per worker, the replicas that just refused a
connection, so the policies choose among the others first.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Sequence

from skyk.builtin.policies import RoundRobin
from skyk.serve.policies import LoadBalancingPolicy

#: Header a client sets to keep its conversation on one replica.
SESSION_HEADER = "X-Session-ID"
#: How much of a prompt keys the hash: enough to tell system prompts apart.
PROMPT_PREFIX_BYTES = 256
#: Points per replica on the ring; more points, more even shares.
RING_POINTS_PER_REPLICA = 160
#: Seconds a replica that failed before answering is tried only after the others.
EJECT_S = 3.0


class InFlight:
    """Requests each replica is serving now, from this worker.

    Callers pair every :meth:`acquire` with exactly one :meth:`release`
    (in ``finally`` blocks), which keeps the counts right on errors and
    client disconnects.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def acquire(self, url: str) -> None:
        """Count one more request on ``url``."""
        self._counts[url] += 1

    def release(self, url: str) -> None:
        """Count one request on ``url`` as finished."""
        self._counts[url] -= 1

    def get(self, url: str) -> int:
        """Requests in flight on ``url``."""
        return self._counts[url]

    def snapshot(self) -> dict[str, int]:
        """Every replica seen so far and its count (zeros included)."""
        return dict(self._counts)


class Ejections:
    """Replicas that failed before answering, tried last for :data:`EJECT_S` seconds.

    Passive health checking: a replica that was just killed leaves rotation at
    its first failed connection, long before the controller's probes notice.
    It is never dropped, only put last, so when every replica is ejected they
    are all still tried.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # url -> monotonic end of its ejection

    def eject(self, url: str, now: float | None = None) -> None:
        """Put ``url`` last for the next :data:`EJECT_S` seconds."""
        self._until[url] = (time.monotonic() if now is None else now) + EJECT_S

    def restore(self, url: str) -> None:
        """Put ``url`` back in rotation (it answered)."""
        self._until.pop(url, None)

    def preferred(self, replicas: Sequence[str], now: float | None = None) -> list[str]:
        """The replicas to choose among first: those not ejected, else all of them."""
        if not self._until:  # the common case: nothing to filter
            return list(replicas)
        now = time.monotonic() if now is None else now
        for url, until in list(self._until.items()):
            if until <= now:
                del self._until[url]
        healthy = [url for url in replicas if url not in self._until]
        return healthy or list(replicas)


class LeastLoad(LoadBalancingPolicy):
    """The replica with the fewest requests in flight; ties go round in turn."""

    name = "least_load"

    def __init__(self, in_flight: InFlight) -> None:
        self._in_flight = in_flight
        self._start = itertools.count()

    def choose(self, replicas: Sequence[str], request_key: str | None = None) -> str | None:
        """Return the least busy replica, or None when there are none."""
        if not replicas:
            return None
        # Starting the scan at a moving offset spreads equal loads over all replicas.
        offset = next(self._start) % len(replicas)
        rotated = [*replicas[offset:], *replicas[:offset]]
        return min(rotated, key=self._in_flight.get)


def _point(text: str) -> int:
    # A stable hash (not Python's salted hash()) so all workers agree.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=16)
def _ring(replicas: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """The sorted ring points of ``replicas`` and the replica owning each point."""
    points = sorted((_point(f"{url}#{i}"), url)
                    for url in replicas for i in range(RING_POINTS_PER_REPLICA))
    return [p for p, _ in points], [url for _, url in points]


class ConsistentHash(LoadBalancingPolicy):
    """Same key, same replica; a replica leaving moves only its own keys.

    Requests without a key go round in turn.
    """

    name = "consistent_hash"

    def __init__(self) -> None:
        self._fallback = RoundRobin()

    def choose(self, replicas: Sequence[str], request_key: str | None = None) -> str | None:
        """Return the replica that owns ``request_key`` on the ring of ``replicas``."""
        if not replicas:
            return None
        if request_key is None:
            return self._fallback.choose(replicas)
        points, owners = _ring(tuple(replicas))
        index = bisect.bisect(points, _point(request_key)) % len(points)
        return owners[index]


def make_policy(name: str, in_flight: InFlight) -> LoadBalancingPolicy:
    """Build the policy called ``name``; raise KeyError for an unknown name."""
    if name == "round_robin":
        return RoundRobin()
    if name == "least_load":
        return LeastLoad(in_flight)
    if name == "consistent_hash":
        return ConsistentHash()
    raise KeyError(name)


def request_key(session: str | None, body: bytes) -> str | None:
    """The affinity key of a request: its session, else a prefix of its prompt.

    ``session`` is the ``X-Session-ID`` header; else the OpenAI ``user`` field;
    the prompt prefix is the first 256 bytes of ``prompt`` or of the messages'
    text, so requests sharing a system prompt share a replica (and its cache).
    Never raises, whatever the body: it runs as the request arrives, and the
    replica, not the router, is the one to answer a malformed request.
    """
    if session:
        return f"session:{session}"
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        return None
    if not isinstance(document, dict):
        return None
    user = document.get("user")
    if isinstance(user, str) and user:
        return f"session:{user}"
    # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which UTF-8 cannot.
    prefix = _prompt_text(document).encode("utf-8", "surrogatepass")[:PROMPT_PREFIX_BYTES]
    return f"prompt:{prefix.hex()}" if prefix else None


def _prompt_text(document: dict) -> str:
    prompt = document.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of prompts: key on the first
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):  # token ids
        return json.dumps(prompt[:PROMPT_PREFIX_BYTES])
    parts: list[str] = []
    size = 0
    messages = document.get("messages")
    for message in messages if isinstance(messages, list) else ():
        for text in _message_texts(message):
            parts.append(text)
            size += len(text)
        if size >= PROMPT_PREFIX_BYTES:
            break
    return "".join(parts)


def _message_texts(message: object) -> list[str]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):  # multi-part content: its text parts
        return [part["text"] for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return []

"""Replica discovery: the ready replicas and the service's routing settings.

Every worker polls its source (the controller's ``GET /-/replicas`` or a JSON
file) on its own; the list is small and the poll cheap, and it spares the
workers any shared state. When the source fails, the last good list stays in
use, so a controller restart does not take the service down.

A service scaled to zero lists no replica and a ``hold_s``: requests then wait
in :meth:`ReplicaWatcher.wait_for_replicas` while the controller starts one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)

#: The controller path that lists the ready replicas.
REPLICAS_PATH = "/-/replicas"
DEFAULT_POLICY = "round_robin"


@dataclass(frozen=True)
class Replica:
    """A ready replica: the controller's id and the base URL it serves on."""

    id: int | str
    url: str


@dataclass(frozen=True)
class ReplicaView:
    """One answer of the replica source, validated."""

    replicas: tuple[Replica, ...] = ()
    load_balancing_policy: str = DEFAULT_POLICY
    #: Lower-case hex sha256 of each accepted API key; None when keys are not required.
    api_keys_sha256: frozenset[str] | None = None
    #: Seconds a request may wait, from its arrival, for a replica while none is
    #: ready (a cold start from zero); 0 answers 503 at once.
    hold_s: float = 0.0
    #: The controller's number for this list (it grows with each change); None
    #: from a source that numbers none. Reported in ``/-/stats``, so the
    #: controller learns when every worker routes by a list.
    version: int | None = None
    urls: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(r.url for r in self.replicas))


def parse_view(document: Any) -> ReplicaView:
    """Validate the controller's JSON document; raise ValueError naming what is wrong."""
    if not isinstance(document, dict) or not isinstance(document.get("replicas"), list):
        raise ValueError('expected an object with a "replicas" list')
    replicas = []
    for entry in document["replicas"]:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).netloc:
            raise ValueError(f"replica entry without an http(s) url: {entry!r}")
        replicas.append(Replica(id=entry.get("id", url), url=url.rstrip("/")))
    policy = document.get("load_balancing_policy") or DEFAULT_POLICY
    if not isinstance(policy, str):
        raise ValueError(f"load_balancing_policy must be a string, not {policy!r}")
    hashes = document.get("api_keys_sha256")
    if hashes is not None:
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise ValueError("api_keys_sha256 must be a list of hex strings or null")
        hashes = frozenset(h.lower() for h in hashes)
    hold_s = document.get("hold_s", 0)
    # bool is an int to Python, but "hold_s": true is a mistake, not one second.
    if isinstance(hold_s, bool) or not isinstance(hold_s, (int, float)) \
            or not math.isfinite(hold_s) or hold_s < 0:
        raise ValueError(f"hold_s must be a non-negative number of seconds, not {hold_s!r}")
    version = document.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 0):
        raise ValueError(f"version must be a non-negative integer or null, not {version!r}")
    # Sorted by URL so every worker (and the hash ring) sees the same order.
    return ReplicaView(tuple(sorted(replicas, key=lambda r: r.url)), policy, hashes,
                       float(hold_s), version)


class ControllerSource:
    """Reads the view from ``GET {controller}/-/replicas``."""

    def __init__(self, base_url: str) -> None:
        self.location = base_url.rstrip("/") + REPLICAS_PATH
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self) -> ReplicaView | None:
        """Return the controller's current view (never None: the answer is always fresh)."""
        if self._session is None:  # made here, inside the worker's event loop
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        async with self._session.get(self.location) as response:
            response.raise_for_status()
            return parse_view(await response.json(content_type=None))

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


class FileSource:
    """Reads the view from a JSON file, again only when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.location = path
        self._seen: tuple[int, int] | None = None

    async def fetch(self) -> ReplicaView | None:
        """Return the file's view, or None when the file is unchanged since the last read."""
        stat = os.stat(self.location)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._seen:
            return None
        with open(self.location, encoding="utf-8") as handle:
            view = parse_view(json.load(handle))
        # Remembered only after a good parse: a half-written file is read again next time.
        self._seen = stamp
        return view

    async def aclose(self) -> None:
        """Nothing to release; here so both sources close alike."""


class ReplicaWatcher:
    """Holds the current :class:`ReplicaView` and refreshes it from a source."""

    def __init__(self, source: ControllerSource | FileSource | None) -> None:
        self.source = source
        # Set exactly while the view lists a replica: held requests wait on it,
        # so a refresh that brings the first replica wakes them all at once.
        self._has_replicas = asyncio.Event()
        self._install(ReplicaView())
        self._last_error: str | None = None

    @property
    def view(self) -> ReplicaView:
        """The last good view read from the source."""
        return self._view

    def _install(self, view: ReplicaView) -> None:
        self._view = view
        if view.urls:
            self._has_replicas.set()
        else:
            self._has_replicas.clear()

    async def wait_for_replicas(self, timeout_s: float) -> ReplicaView | None:
        """Return the view once it lists a replica; None if none does within ``timeout_s``."""

        async def listed() -> ReplicaView:
            # A loop: an empty view may replace the one that woke this waiter
            # before it runs again.
            while not self._view.urls:
                await self._has_replicas.wait()
            return self._view

        try:
            return await asyncio.wait_for(listed(), max(timeout_s, 0.0))
        except asyncio.TimeoutError:
            return None

    async def refresh(self) -> None:
        """Poll the source once; keep the last good view when it fails."""
        if self.source is None:
            return
        try:
            view = await self.source.fetch()
        except (OSError, ValueError, RecursionError, aiohttp.ClientError,
                asyncio.TimeoutError) as error:
            # RecursionError: JSON nested too deep to parse. Anything escaping here
            # would end the worker's poll, and it would route by a stale list for good.
            message = f"cannot read replicas from {self.source.location}: {error}"
            # Logged once per distinct failure, not twice a second.
            if message != self._last_error:
                log.warning("%s; keeping the last list (%d replicas)", message,
                            len(self.view.replicas))
                self._last_error = message
            return
        self._last_error = None
        if view is not None:
            self._install(view)

    async def aclose(self) -> None:
        """Release the source's resources."""
        if self.source is not None:
            await self.source.aclose()

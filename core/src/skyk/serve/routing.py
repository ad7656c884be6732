"""Whether the router routes to a replica yet: READY means every router worker does.

Each gunicorn worker of the router reads the controller's replica list on its
own poll, so a replica the controller has just listed is not yet routed to by
every worker: a request reaching one that has not read the list gets a 503.
The controller therefore numbers each list it publishes (its ``version``),
the router reports in ``GET /-/stats`` the oldest version any of its workers
routes by (``replicas_version``), and a replica whose probe passed is listed
at once but shown READY only once that version includes it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from skyk.serve import state

#: Versions this controller published that a router may still report: far more
#: than change in the few seconds a router worker lags behind.
HISTORY = 1000


class Routing:
    """The versions of the replica list this controller published, and what the router routes by."""

    def __init__(self) -> None:
        #: The version of the list published last (0 before the first).
        self.version = 0
        self._published: tuple[int, ...] | None = None
        #: Each listed replica: the version from which it has been listed without a break.
        self._since: dict[int, int] = {}
        self._history: deque[int] = deque(maxlen=HISTORY)
        #: The oldest version any router worker routes by, if it is one of ours.
        self._routed_version: int | None = None
        #: Replicas whose probe passed this round but that are not READY yet.
        self._admitted: set[int] = set()

    def new_round(self, router_stats: dict[str, Any] | None) -> None:
        """Start a probing round, with the router's ``/-/stats`` (None when it did not answer)."""
        self._admitted.clear()
        version = (router_stats or {}).get("replicas_version")
        # Only a version of this controller's: a restarted controller numbers
        # anew, and a router may still route by its predecessor's list.
        self._routed_version = version if version in self._history else None

    def admit(self, replica_id: int) -> bool:
        """A replica that is not READY passed its probe: list it; True once it may show READY."""
        self._admitted.add(replica_id)
        since = self._since.get(replica_id)
        return since is not None and self._routed_version is not None \
            and self._routed_version >= since

    def candidates(self, replicas: Iterable[state.ReplicaRecord]) -> list[state.ReplicaRecord]:
        """``replicas``, with those admitted this round counted as ready for the list."""
        return [dataclasses.replace(r, status=state.READY)
                if r.id in self._admitted and r.status in (state.STARTING, state.NOT_READY) else r
                for r in replicas]

    def publish(self, replica_ids: Iterable[int]) -> None:
        """Number the list of ``replica_ids`` the router is given: a new version if it changed."""
        listed = tuple(sorted(replica_ids))
        if listed == self._published:
            return
        # Wall-clock milliseconds, yet always growing: versions stay ordered, and
        # a restarted controller's do not repeat its predecessor's.
        self.version = max(self.version + 1, time.time_ns() // 1_000_000)
        self._history.append(self.version)
        self._published = listed
        self._since = {replica_id: self._since.get(replica_id, self.version) for replica_id in listed}

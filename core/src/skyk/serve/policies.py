"""The interfaces scaling and load-balancing policy plugins implement."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class LoadSample:
    """What a controller knows about a service's load at one moment."""

    ready_replicas: int
    requests_per_second: float
    queue_length: float = 0.0


@dataclass(frozen=True)
class ReplicaBounds:
    """The scaling limits from a service's ``replica_policy``."""

    min_replicas: int
    max_replicas: int
    target_qps_per_replica: float | None = None


class ScalingPolicy(abc.ABC):
    """Decides how many replicas a service should run."""

    name: ClassVar[str]

    @abc.abstractmethod
    def desired_replicas(self, load: LoadSample, bounds: ReplicaBounds) -> int:
        """Return the replica count to aim for, within ``bounds``."""


class LoadBalancingPolicy(abc.ABC):
    """Picks the replica that serves the next request."""

    name: ClassVar[str]

    @abc.abstractmethod
    def choose(self, replicas: Sequence[str], request_key: str | None = None) -> str | None:
        """Return one of ``replicas`` (URLs) for the next request, or None if there are none."""

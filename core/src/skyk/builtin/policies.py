"""Default scaling and load-balancing policies."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from skyk.hookspecs import hookimpl
from skyk.serve.policies import (
    LoadBalancingPolicy,
    LoadSample,
    ReplicaBounds,
    ScalingPolicy,
)


class RequestRateScaling(ScalingPolicy):
    """Enough replicas that each sees at most ``target_qps_per_replica``."""

    name = "request_rate"

    def desired_replicas(self, load: LoadSample, bounds: ReplicaBounds) -> int:
        if not bounds.target_qps_per_replica:
            return bounds.min_replicas
        wanted = math.ceil(load.requests_per_second / bounds.target_qps_per_replica)
        return max(bounds.min_replicas, min(bounds.max_replicas, wanted))


class RoundRobin(LoadBalancingPolicy):
    """Each ready replica in turn."""

    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, replicas: Sequence[str], request_key: str | None = None) -> str | None:
        if not replicas:
            return None
        return replicas[next(self._counter) % len(replicas)]


@hookimpl
def skyk_scaling_policies():
    return [RequestRateScaling()]


@hookimpl
def skyk_load_balancing_policies():
    return [RoundRobin()]

"""Default scaling and load-balancing policies."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from skyk.hookspecs import hookimpl
from skyk.serve.policies import LoadBalancingPolicy, LoadSample, ScalingPolicy

if TYPE_CHECKING:
    from skyk.spec.service import ReplicaPolicy

#: Slack for float rounding, so that a load exactly at the target (0.3 / 0.1
#: computing to 3.0000000000000004) does not ask for an extra replica.
_EPSILON = 1e-9


def _replicas_for(amount: float, per_replica: float) -> int:
    """The fewest replicas that keep each at or under ``per_replica`` of ``amount``."""
    return max(0, math.ceil(amount / per_replica - _EPSILON))


class RequestRateScaling(ScalingPolicy):
    """Enough replicas that each sees at most ``target_qps_per_replica`` requests per second.

    This is SkyServe's policy: ``ceil(requests_per_second /
    target_qps_per_replica)``. Without the target (allowed only for a fixed
    count) it asks for ``min_replicas``.

    With a target per accelerator (``{H100: 20, A100: 10}``, SkyServe's
    instance-aware autoscaling) a replica's share depends on its GPU, so the
    count comes from the replicas' capacity (the sum of their targets; an
    unknown or unlisted GPU counts as the smallest target):

    * load above the alive replicas' capacity adds replicas for the rest,
      each counted at the largest target (new replicas land on the cheapest
      GPU that fits, often the best one);
    * load below it keeps the ready replicas, largest target first, until
      their capacity covers it (all alive ones while the ready ones fall
      short);
    * with no replica alive it asks for ``min_replicas``.
    """

    name = "request_rate"

    def desired_replicas(self, load: LoadSample, policy: ReplicaPolicy) -> int:
        """Return ``ceil(rps / target_qps_per_replica)``, or the per-accelerator count above."""
        from skyk.spec.service import qps_for

        targets = policy.target_qps_per_replica
        if targets is None:
            return policy.min_replicas
        if not isinstance(targets, dict):
            return _replicas_for(load.requests_per_second, targets)
        if not load.replica_accelerators:
            return policy.min_replicas
        rps = load.requests_per_second
        capacity = sum(qps_for(targets, a) for a in load.replica_accelerators)
        if rps > capacity + _EPSILON:
            return len(load.replica_accelerators) + _replicas_for(rps - capacity, max(targets.values()))
        kept, covered = 0, 0.0
        for share in sorted((qps_for(targets, a) for a in load.ready_accelerators), reverse=True):
            if covered >= rps - _EPSILON:
                break
            kept, covered = kept + 1, covered + share
        if covered < rps - _EPSILON:
            # The ready replicas alone fall short: the ones still launching are needed too.
            return len(load.replica_accelerators)
        return kept


class QueueLengthScaling(ScalingPolicy):
    """Enough replicas that each has at most ``target_queue_length_per_replica`` requests waiting.

    The signal is the engines' waiting queues (requests admitted but not yet
    running, as vLLM and SGLang report them) plus the requests the router
    holds because no replica is ready. It asks for

        max(ceil(queued / target_queue_length_per_replica), replicas with a queue)

    A queue measures demand the replicas cannot absorb, not total demand, so:

    * a queue above target on average adds replicas for as long as it lasts
      (the wish does not depend on how many replicas run, so replicas still
      launching are not asked for twice);
    * a replica with anything waiting is saturated and is never wished away,
      even when the total queue is below one replica's target;
    * an empty queue everywhere asks for 0, and the count falls to
      ``min_replicas`` once the queue has stayed empty for the whole
      ``downscale_delay_seconds`` (any queue inside that window holds it).

    Steady traffic that the replicas just absorb shows no queue, so this
    policy may shed a replica it needs and win it back one upscale delay
    later; ``request_rate`` suits steady traffic better, this one bursts of
    long generations whose cost a request count does not show.

    Without the target (allowed only for a fixed count) it asks for
    ``min_replicas``.
    """

    name = "queue_length"

    def desired_replicas(self, load: LoadSample, policy: ReplicaPolicy) -> int:
        """Return the count that brings the average queue to the target; see the class docs."""
        target = policy.target_queue_length_per_replica
        if target is None:
            return policy.min_replicas
        queued = sum(load.queue_lengths) + load.waiting_requests
        saturated = sum(1 for length in load.queue_lengths if length > 0)
        return max(_replicas_for(queued, target), saturated)


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
    """Provide ``request_rate`` and ``queue_length``."""
    return [RequestRateScaling(), QueueLengthScaling()]


@hookimpl
def skyk_load_balancing_policies():
    """Provide ``round_robin``."""
    return [RoundRobin()]

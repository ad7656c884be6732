"""The interfaces scaling and load-balancing policy plugins implement."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    # Only for annotations: importing the spec would pull pydantic into every
    # process that merely names a policy.
    from skyk.spec.service import ReplicaPolicy


@dataclass(frozen=True)
class LoadSample:
    """What a controller knows about a service's load at one moment.

    The controller builds one per tick from the router's stats and the ready
    replicas' engine metrics, and hands it to the service's scaling policy.
    """

    current_replicas: int
    """Replicas alive now, ready or still launching."""
    ready_replicas: int
    """Replicas that passed their readiness probe and take traffic."""
    requests_per_second: float
    """Requests the router received per second, averaged over its rate window."""
    queue_lengths: tuple[float, ...]
    """Requests waiting in each ready replica's engine; replicas whose metrics
    could not be read are left out, so this may be shorter than ``ready_replicas``."""
    waiting_requests: int = 0
    """Requests the router is holding because no replica is ready."""
    replica_accelerators: tuple[str | None, ...] = ()
    """The accelerator of each replica alive now (None while not yet known), for
    targets that depend on it (``target_qps_per_replica`` per accelerator)."""
    ready_accelerators: tuple[str | None, ...] = ()
    """The accelerator of each ready replica, likewise."""


class ScalingPolicy(abc.ABC):
    """Decides how many replicas a service should run.

    A policy only turns one load sample into a wish; the controller's
    :class:`skyk.serve.autoscale.Autoscaler` smooths the wishes over the
    service's upscale and downscale delays and clamps them to its bounds.
    """

    name: ClassVar[str]
    """The name a service's ``replica_policy.policy`` selects this policy by."""

    @abc.abstractmethod
    def desired_replicas(self, load: LoadSample, policy: ReplicaPolicy) -> int:
        """Return the replica count this load calls for, unclamped.

        :param load: the service's load now.
        :param policy: the service's ``replica_policy`` (targets, bounds).
        :return: a count >= 0; it may lie outside ``min_replicas`` ..
            ``max_replicas``: the autoscaler clamps it.
        """


class LoadBalancingPolicy(abc.ABC):
    """Picks the replica that serves the next request."""

    name: ClassVar[str]

    @abc.abstractmethod
    def choose(self, replicas: Sequence[str], request_key: str | None = None) -> str | None:
        """Return one of ``replicas`` (URLs) for the next request, or None if there are none."""

"""What a controller should do next with a service's replicas: pure decisions, no I/O.

The controller gathers the replicas from the state database and asks this
module three questions each tick: which replicas to launch or retire for the
newest version (with spot replicas and their on-demand fallback), which
replicas of older versions may go now (``serve update``), and which ready
replicas the router should send traffic to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from skyk.serve import state
from skyk.serve.state import ReplicaRecord


@dataclass(frozen=True)
class SpotPolicy:
    """How a service mixes spot and on-demand replicas (SkyServe's fields)."""

    use_spot: bool = False
    #: on-demand replicas kept whatever the spot market does
    base_ondemand: int = 0
    #: launch on-demand replicas to stand in for spot ones that are not ready
    dynamic_fallback: bool = False


@dataclass
class Plan:
    """Replicas to launch (by kind) and to retire."""

    launch_spot: int = 0
    launch_ondemand: int = 0
    retire: list[ReplicaRecord] = field(default_factory=list)


def _least_useful_first(replicas: list[ReplicaRecord],
                        share: Callable[[ReplicaRecord], float] | None = None) -> list[ReplicaRecord]:
    # Not ready before ready, smaller share of the load before larger (when
    # replicas differ, e.g. a per-accelerator target), older versions before
    # newer, newest launch first: scaling down keeps the replicas that serve
    # most and have served longest.
    return sorted(replicas, key=lambda r: (r.status == state.READY, share(r) if share else 0.0,
                                           r.version, -r.id))


def plan_version(alive: list[ReplicaRecord], target: int, spot: SpotPolicy,
                 share: Callable[[ReplicaRecord], float] | None = None) -> Plan:
    """Plan the newest version's replicas: ``alive`` are its live ones, ``target`` its size.

    Without spot every replica is on-demand. With spot, ``base_ondemand``
    replicas are on-demand and the rest spot; with the dynamic fallback, each
    spot replica that is not ready is covered by an extra on-demand one,
    which goes again once the spot replica is ready. ``share`` gives each
    replica's share of the load it is meant to take (its GPU's
    ``target_qps_per_replica``); when scaling down, smaller shares go first.
    """
    if spot.use_spot:
        base = min(spot.base_ondemand, target)
        spot_target = target - base
        ready_spot = sum(r.spot and r.status == state.READY for r in alive)
        ondemand_target = base + (max(0, spot_target - ready_spot) if spot.dynamic_fallback else 0)
    else:
        spot_target, ondemand_target = 0, target
    plan = Plan()
    for is_spot, wanted in ((True, spot_target), (False, ondemand_target)):
        have = [r for r in alive if r.spot == is_spot]
        missing = wanted - len(have)
        if missing > 0:
            if is_spot:
                plan.launch_spot = missing
            else:
                plan.launch_ondemand = missing
        elif missing < 0:
            plan.retire.extend(_least_useful_first(have, share)[:-missing])
    return plan


def retire_old(old: list[ReplicaRecord], new_ready: int, target: int, mode: str) -> list[ReplicaRecord]:
    """Return the replicas of older versions that can go now.

    Rolling: old replicas go one for one as new ones become ready, so the
    service never has fewer than ``target`` ready replicas for long. Blue-green:
    they all stay until the new version has ``target`` ready replicas.
    """
    if mode == state.BLUE_GREEN:
        return list(old) if new_ready >= target else []
    keep = max(0, target - new_ready)
    ordered = _least_useful_first(old)
    return ordered[:max(0, len(ordered) - keep)]


def published(replicas: list[ReplicaRecord], version: int, target: int, mode: str) -> list[ReplicaRecord]:
    """Return the replicas the router should send requests to.

    Every ready replica, except during a blue-green update: there the old
    version keeps all the traffic until the new one is completely ready.
    """
    ready = [r for r in replicas if r.status == state.READY]
    new_ready = sum(r.version == version for r in ready)
    if mode == state.BLUE_GREEN and new_ready < target and any(r.version < version for r in ready):
        return [r for r in ready if r.version < version]
    return ready

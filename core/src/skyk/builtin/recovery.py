"""SkyPilot's recovery strategies for managed jobs: EAGER_NEXT_REGION and FAILOVER."""

from __future__ import annotations

from skyk.hookspecs import hookimpl
from skyk.jobs.recovery import Placement, RecoveryStrategy, Relaunch


class EagerNextRegion(RecoveryStrategy):
    """Leave the region that preempted the job: the cheapest place elsewhere, then anywhere.

    Spot capacity taken back in a region is often short there for a while,
    so the region is avoided for this relaunch; only if nothing else can
    take the job does it go back there.
    """

    name = "EAGER_NEXT_REGION"

    def relaunches(self, lost: Placement) -> list[Relaunch]:
        """Anywhere but the lost region first, then anywhere."""
        return [Relaunch(blocked=((lost.cloud, lost.region, None, None),)), Relaunch()]


class Failover(RecoveryStrategy):
    """Stay where the job ran (its data and quotas are there), then go anywhere."""

    name = "FAILOVER"

    def relaunches(self, lost: Placement) -> list[Relaunch]:
        """The lost region first, then anywhere."""
        return [Relaunch(infra=lost.infra), Relaunch()]


@hookimpl
def skyk_recovery_strategies():
    """Core's recovery strategies."""
    return [EagerNextRegion(), Failover()]

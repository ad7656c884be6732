"""Recovery strategies: where a managed job's cluster goes after its nodes were taken away.

A strategy is a plugin (``skyk_recovery_strategies`` in :mod:`skyk.hookspecs`):
given where the job lost its nodes, it returns the relaunches to try, in
order. The controller tries each until one provisions; when all fail it
waits and tries them again, within the job's no-resources budget.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

#: (cloud, region, zone, instance type); None for "any", as the optimizer's blocked locations
Location = tuple[str, "str | None", "str | None", "str | None"]

#: SkyPilot's default, and skyk's
DEFAULT_STRATEGY = "EAGER_NEXT_REGION"


@dataclass(frozen=True)
class Placement:
    """Where a job's cluster ran: its cloud, region and zone (None where the cloud has none)."""

    cloud: str
    region: str
    zone: str | None = None

    @property
    def infra(self) -> str:
        """``cloud/region``, as ``--infra`` takes it."""
        return f"{self.cloud}/{self.region}"


@dataclass(frozen=True)
class Relaunch:
    """One try at placing a job's cluster: pinned to a region, or avoiding some places."""

    #: ``cloud/region`` the cluster must be in (None: anywhere the task allows)
    infra: str | None = None
    #: places the optimizer must not choose
    blocked: tuple[Location, ...] = ()

    def describe(self) -> str:
        """A few words for the job's log."""
        if self.infra:
            return f"in {self.infra}"
        if self.blocked:
            return "avoiding " + ", ".join("/".join(p for p in place if p) for place in self.blocked)
        return "anywhere the task allows"


class RecoveryStrategy(ABC):
    """How a managed job is placed again after a preemption.

    ``name`` is what ``resources.job_recovery`` (or ``--job-recovery``)
    names, upper case, e.g. ``EAGER_NEXT_REGION``.
    """

    name: str

    @abstractmethod
    def relaunches(self, lost: Placement) -> list[Relaunch]:
        """Return the relaunches to try, in order, after the job's nodes at ``lost`` were taken away.

        The list must not be empty, and should end with a relaunch that can
        go anywhere the task allows, so a job is never stuck because of the
        strategy alone.
        """

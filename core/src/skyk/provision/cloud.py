"""The interface a cloud plugin implements, and the result of a credential check."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from skyk.provision.types import ClusterHandle, ProvisionAttempt, ProvisionRequest

#: What a node really is doing, as ``status -r`` reports it: ``preempted`` and
#: ``terminated`` are nodes the cloud still lists but that are gone for good
#: (reclaimed spot capacity; deleted outside skyk, or by autostop --down);
#: ``missing`` nodes the cloud no longer knows.
NodeState = Literal["running", "stopped", "preempted", "terminated", "missing"]


@dataclass(frozen=True)
class CredentialCheck:
    """Whether a cloud is usable, and if not, why and how to fix it."""

    ok: bool
    reason: str
    hint: str | None = None


class Cloud(abc.ABC):
    """A cloud skyk can place work on.

    Subclasses set ``name`` (lower case, as users write it in ``cloud:`` and
    ``infra:``) and implement :meth:`check_credentials`. A cloud that can
    run tasks also implements the provisioning verbs: :meth:`provision`,
    :meth:`wait_ready`, :meth:`query`, :meth:`stop`, :meth:`start` and
    :meth:`terminate`, and :meth:`find_attempt` and :meth:`remove_attempt` for
    launches killed mid-provisioning. Until it does, launching on it fails with an
    ``unsupported`` error and the optimizer moves to another cloud.
    """

    name: ClassVar[str]
    #: how tables name the cloud to people, as SkyPilot's do (``AWS``, ``GCP``, ``Azure``);
    #: empty means :attr:`name`
    display_name: ClassVar[str] = ""

    #: vCPUs a task gets on this cloud when it names no cpus, memory,
    #: accelerators or instance type (SkyPilot's default is 8 with 4 GiB each).
    #: ``None`` places no floor, as on the local machine.
    default_cpus: ClassVar[float | None] = 8
    default_memory_gib: ClassVar[float | None] = 32

    @abc.abstractmethod
    def check_credentials(self) -> CredentialCheck:
        """Return whether credentials for this cloud are present and well formed.

        Must not use the network: it reads environment variables and local
        files only, so ``skyk check`` is fast and works offline.
        """

    def provision(self, request: ProvisionRequest) -> ClusterHandle:
        """Create the nodes ``request`` asks for and return their handle.

        Raise :class:`~skyk.provision.types.ProvisionError` with the scope
        of the failure (zone, region or cloud) so failover can move on; clean
        up any node this call made before raising.
        """
        raise self._unsupported()

    def wait_ready(self, handle: ClusterHandle, timeout: float) -> None:
        """Block until every node of ``handle`` accepts commands, or raise ``ProvisionError``."""
        return None  # by default a node is usable as soon as provision returns

    def query(self, handle: ClusterHandle) -> list[NodeState]:
        """Return what each node of ``handle`` really is doing, head first."""
        raise self._unsupported()

    def stop(self, handle: ClusterHandle) -> None:
        """Stop the nodes, keeping their disks, so :meth:`start` can bring them back."""
        raise self._unsupported()

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        """Start stopped nodes; return the handle (addresses may have changed)."""
        raise self._unsupported()

    def terminate(self, handle: ClusterHandle) -> None:
        """Delete the nodes and everything made for them; succeed if already gone."""
        raise self._unsupported()

    def find_attempt(self, attempt: ProvisionAttempt) -> list[str]:
        """Return what provisioning ``attempt`` made that still exists, one short phrase each.

        The attempt's :meth:`provision` call may never have returned (the
        launch was killed), so find resources by ``attempt.uid`` (the
        request's uid: tags, names), not by a handle. ``[]`` if nothing is left.
        """
        raise self._unsupported()

    def remove_attempt(self, attempt: ProvisionAttempt) -> None:
        """Delete everything :meth:`find_attempt` would find; succeed if nothing is left."""
        raise self._unsupported()

    def prepare_autostop(self, handle: ClusterHandle, down: bool) -> None:
        """Make the nodes ready for autostop before the agent is told, e.g. set what a node's
        own shutdown does (stop it, or with ``down`` delete it) where the cloud decides that."""
        return None  # most clouds need nothing: the autostop command does it all

    def autostop_refusal(self, down: bool, use_spot: bool) -> str | None:
        """Why this cloud cannot autostop nodes (``down``: tear them down; ``use_spot``: spot
        nodes), in a phrase; None when it can.

        Asked before a launch that sets autostop provisions anything, so a cloud that
        cannot is left out of the plan instead of leaving nodes up without it. By
        default a cloud can when it has an :meth:`autostop_command`.
        """
        if type(self).autostop_command is Cloud.autostop_command:
            return f"the {self.name} cloud cannot {'tear down' if down else 'stop'} its nodes from inside"
        return None

    def autostop_command(self, handle: ClusterHandle, down: bool) -> str | None:
        """Return the shell command the head node's agent runs to stop (or tear down) itself.

        ``None`` means the cloud cannot stop a node from inside, and autostop
        is refused on it.
        """
        return None

    def _unsupported(self) -> Exception:
        from skyk.provision.types import ProvisionError

        return ProvisionError("unsupported", "cloud",
                              f"the {self.name} plugin cannot provision nodes in this version")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

"""What provisioning takes and returns, and how it fails.

Records are frozen dataclasses that round-trip through JSON, because the
state database stores them as text (never pickles).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from skyk.catalog.offering import Offering

#: How far a provisioning failure reaches: block this zone, region or cloud.
Scope = Literal["zone", "region", "cloud"]

#: Why provisioning failed, as the failover loop and the final error report it.
FailureKind = Literal["capacity", "quota", "outage", "credentials", "unsupported", "timeout", "other"]


@dataclass(frozen=True)
class ProvisionRequest:
    """Create ``num_nodes`` nodes of ``offering`` for cluster ``cluster``.

    ``uid`` is unique per launch attempt, so a plugin can tag and later find
    exactly the nodes this attempt made. ``disk_size`` (GiB) and ``disk_tier``
    (``low``, ``medium``, ``high``, ``ultra`` or ``best``) are the task's; None
    leaves each to the cloud's default.
    """

    cluster: str
    uid: str
    num_nodes: int
    offering: Offering
    use_spot: bool = False
    ports: tuple[int, ...] = ()
    disk_size: int | None = None
    image_id: str | None = None
    disk_tier: str | None = None


@dataclass(frozen=True)
class ProvisionAttempt:
    """One request to a cloud for nodes, recorded before the cloud is asked.

    A launch killed before the cloud answered leaves only this behind, so
    ``status -r`` and ``down`` can find (by ``uid``, e.g. a tag on a real
    cloud) and remove whatever the attempt made.
    """

    cluster: str
    uid: str
    cloud: str
    region: str
    zone: str | None = None

    @classmethod
    def of(cls, request: ProvisionRequest) -> ProvisionAttempt:
        """The attempt ``request`` starts."""
        offering = request.offering
        return cls(request.cluster, request.uid, offering.cloud, offering.region, offering.zone)

    @property
    def infra(self) -> str:
        """``cloud/region[/zone]`` as tables show it."""
        return "/".join(p for p in (self.cloud, self.region, self.zone) if p)


@dataclass(frozen=True)
class NodeInfo:
    """One node of a cluster: its addresses and how to run commands on it.

    ``runner`` is a :meth:`~skyk.agent.runners.CommandRunner.spec`, usable
    from the machine running the CLI; ``internal_runner`` (optional) is how
    the head node reaches this node, when that differs.
    """

    node_id: str
    internal_ip: str
    external_ip: str | None
    runner: dict[str, Any]
    internal_runner: dict[str, Any] | None = None

    @property
    def ip(self) -> str:
        """The address the user's machine reaches this node on."""
        return self.external_ip or self.internal_ip


@dataclass(frozen=True)
class ClusterHandle:
    """Where a cluster lives and its nodes, head first; stored as JSON in the state database."""

    cluster: str
    uid: str
    cloud: str
    region: str
    zone: str | None
    instance_type: str
    use_spot: bool
    #: USD per node-hour
    hourly_price: float
    accelerator: str | None
    accelerator_count: float
    nodes: tuple[NodeInfo, ...]
    #: cloud-specific facts the plugin needs later (instance ids, namespaces, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, request: ProvisionRequest, nodes: tuple[NodeInfo, ...],
           extra: dict[str, Any] | None = None) -> ClusterHandle:
        """The handle of ``nodes``, made for ``request`` on its offering."""
        offering = request.offering
        return cls(cluster=request.cluster, uid=request.uid, cloud=offering.cloud,
                   region=offering.region, zone=offering.zone, instance_type=offering.instance_type,
                   use_spot=request.use_spot, hourly_price=offering.hourly_price(request.use_spot) or 0.0,
                   accelerator=offering.accelerator, accelerator_count=offering.accelerator_count,
                   nodes=nodes, extra=dict(extra or {}))

    @property
    def head(self) -> NodeInfo:
        """The head node, where the agent runs."""
        return self.nodes[0]

    @property
    def infra(self) -> str:
        """``cloud/region[/zone]`` as tables show it."""
        return "/".join(p for p in (self.cloud, self.region, self.zone) if p)

    def to_json(self) -> str:
        """Serialize for the state database."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClusterHandle:
        """Rebuild a handle stored by :meth:`to_json`."""
        data = json.loads(text)
        data["nodes"] = tuple(NodeInfo(**n) for n in data["nodes"])
        return cls(**data)


class ProvisionError(Exception):
    """Provisioning failed in a way the failover loop understands.

    ``scope`` says what to stop trying (the zone, the region or the whole
    cloud) and ``kind`` why, e.g. ``ProvisionError("capacity", "zone",
    "no A100 capacity in us-east-1a")``.
    """

    def __init__(self, kind: FailureKind, scope: Scope, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.scope = scope
        self.reason = reason

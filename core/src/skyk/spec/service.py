"""The ``service`` section: how ``skyk serve`` probes, scales and balances replicas."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from skyk.spec.base import SpecModel
from skyk.spec.values import bounded_number, parse_accelerator

# Bounds on every duration and count, checked when the task is read (serve up, serve update,
# launch --dryrun), so an absurd value fails there with one line rather than in the controller.
#: most replicas a service may ask for, in any count
MAX_REPLICAS = 1000
#: longest delay (seconds) before a replica must be ready or the service scales: one day
MAX_DELAY_SECONDS = 86400
#: longest readiness probe (seconds)
MAX_PROBE_TIMEOUT_SECONDS = 600
#: highest per-replica scaling target (requests per second, or requests waiting)
MAX_SCALING_TARGET = 1e6


class ReadinessProbe(SpecModel):
    """An HTTP check that must answer 200 before a replica takes traffic."""

    path: str
    post_data: dict[str, Any] | str | None = None
    headers: dict[str, str] | None = None
    initial_delay_seconds: int = Field(default=1200, ge=0, le=MAX_DELAY_SECONDS)
    timeout_seconds: int = Field(default=15, gt=0, le=MAX_PROBE_TIMEOUT_SECONDS)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"readiness probe path {value!r} must start with '/'"
                             " | hint: write /health or /v1/models")
        return value


#: Built-in scaling policy -> the ``ReplicaPolicy`` field it scales on.
BUILTIN_POLICY_TARGETS: dict[str, str] = {
    "request_rate": "target_qps_per_replica",
    "queue_length": "target_queue_length_per_replica",
}


def parse_qps_target(value: Any) -> float | dict[str, float] | None:
    """Parse ``target_qps_per_replica``: a positive number, or accelerator -> positive number."""
    if value is None:
        return None
    hint = "write target_qps_per_replica: 5, or per accelerator {H100: 20, A100: 10}"

    def qps(number: Any, what: str) -> float:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{what} must be a number of requests per second, got {number!r} | hint: {hint}")
        checked = bounded_number(number, what, MAX_SCALING_TARGET, hint)
        if checked <= 0:
            raise ValueError(f"{what} must be greater than 0, got {number!r} | hint: {hint}")
        return checked

    if not isinstance(value, dict):
        return qps(value, "target_qps_per_replica")
    if not value:
        raise ValueError(f"target_qps_per_replica is an empty mapping | hint: {hint}")
    targets = {}
    for name, number in value.items():
        if not isinstance(name, str):
            raise ValueError(f"target_qps_per_replica key {name!r} must be an accelerator name | hint: {hint}")
        # SkyServe also takes 'A100:1' as key; the count does not change the target.
        accelerator = parse_accelerator(name).name
        targets[accelerator] = qps(number, f"target_qps_per_replica.{name}")
    return targets


def qps_for(targets: float | dict[str, float], accelerator: str | None) -> float:
    """The requests per second one replica on ``accelerator`` should take.

    A per-accelerator target is matched case-insensitively; a replica whose
    accelerator is unknown (still provisioning) or not listed gets the
    smallest target, as SkyServe does, so capacity is never overstated.
    """
    if not isinstance(targets, dict):
        return targets
    wanted = (accelerator or "").casefold()
    for name, target in targets.items():
        if name.casefold() == wanted:
            return target
    return min(targets.values())


class ReplicaPolicy(SpecModel):
    """Autoscaling bounds, the signal to scale on, and the fallback from spot to on-demand.

    SkyPilot's fields keep SkyPilot's meaning and defaults. skyk adds
    ``target_queue_length_per_replica`` (scale on the requests waiting in the
    replicas' engines) and ``policy``, the name of the scaling-policy plugin.
    """

    min_replicas: int = Field(ge=0, le=MAX_REPLICAS)
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    #: Requests per second one replica should take: one number, or one per
    #: accelerator ({H100: 20, A100: 10}) for replicas on mixed GPUs.
    target_qps_per_replica: Any = None
    target_queue_length_per_replica: float | None = Field(default=None, gt=0,
                                                     le=MAX_SCALING_TARGET)
    policy: str | None = Field(default=None, min_length=1)
    upscale_delay_seconds: int = Field(default=300, ge=0, le=MAX_DELAY_SECONDS)
    downscale_delay_seconds: int = Field(default=1200, ge=0, le=MAX_DELAY_SECONDS)
    base_ondemand_fallback_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    dynamic_ondemand_fallback: bool = False

    @field_validator("target_qps_per_replica", mode="before")
    @classmethod
    def _qps_target(cls, value: Any) -> float | dict[str, float] | None:
        return parse_qps_target(value)

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaPolicy:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas"
                             f" ({self.min_replicas}) | hint: raise max_replicas or lower min_replicas")
        if not self.autoscales:
            return self
        # The built-in policies cannot scale without their target; say so now
        # rather than from a controller that silently sits at min_replicas.
        needed = BUILTIN_POLICY_TARGETS.get(self.scaling_policy_name)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"policy {self.scaling_policy_name} needs {needed}"
                             f" | hint: add {needed}, or name another policy")
        return self

    @property
    def upper_replicas(self) -> int:
        """``max_replicas``, or ``min_replicas`` when it is not given (a fixed count)."""
        return self.min_replicas if self.max_replicas is None else self.max_replicas

    @property
    def has_scaling_signal(self) -> bool:
        """Whether anything tells the count to move: a target or a named policy."""
        return (self.policy is not None or self.target_qps_per_replica is not None
                or self.target_queue_length_per_replica is not None)

    @property
    def autoscales(self) -> bool:
        """Whether the replica count may move between two different bounds.

        As in SkyServe, ``min_replicas`` and ``max_replicas`` with no target
        (and no policy) keep the count fixed at ``min_replicas``.
        """
        return self.upper_replicas > self.min_replicas and self.has_scaling_signal

    @property
    def scaling_policy_name(self) -> str:
        """The scaling policy to use: ``policy`` if given, else chosen from the target set.

        ``queue_length`` when ``target_queue_length_per_replica`` is set (it
        wins over ``target_qps_per_replica``), else ``request_rate``.
        """
        if self.policy is not None:
            return self.policy
        return "queue_length" if self.target_queue_length_per_replica is not None else "request_rate"


class TLS(SpecModel):
    """Certificate files for HTTPS on the service endpoint."""

    keyfile: str
    certfile: str


class Service(SpecModel):
    """The ``service`` section of a task."""

    readiness_probe: ReadinessProbe | None = None
    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    replica_policy: ReplicaPolicy | None = None
    load_balancing_policy: str | None = None
    ports: int | None = Field(default=None, ge=1, le=65535)
    tls: TLS | None = None

    @field_validator("readiness_probe", mode="before")
    @classmethod
    def _probe(cls, value: Any) -> Any:
        # The short form is just the path.
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _replicas(self) -> Service:
        if self.replicas is not None and self.replica_policy is not None:
            raise ValueError("give either replicas or replica_policy, not both"
                             " | hint: replicas is a fixed count; replica_policy autoscales")
        return self

    @property
    def probe(self) -> ReadinessProbe:
        """The readiness probe, defaulting to ``GET /``."""
        return self.readiness_probe or ReadinessProbe(path="/")

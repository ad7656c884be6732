"""The ``service`` section: how ``skyk serve`` probes, scales and balances replicas."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from skyk.spec.base import SpecModel


class ReadinessProbe(SpecModel):
    """An HTTP check that must answer 200 before a replica takes traffic."""

    path: str
    post_data: dict[str, Any] | str | None = None
    headers: dict[str, str] | None = None
    initial_delay_seconds: int = Field(default=1200, ge=0)
    timeout_seconds: int = Field(default=15, gt=0)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"readiness probe path {value!r} must start with '/'"
                             " | hint: write /health or /v1/models")
        return value


class ReplicaPolicy(SpecModel):
    """Autoscaling bounds and the fallback from spot to on-demand."""

    min_replicas: int = Field(ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    target_qps_per_replica: float | None = Field(default=None, gt=0)
    upscale_delay_seconds: int = Field(default=300, ge=0)
    downscale_delay_seconds: int = Field(default=1200, ge=0)
    base_ondemand_fallback_replicas: int = Field(default=0, ge=0)
    dynamic_ondemand_fallback: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaPolicy:
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas"
                             f" ({self.min_replicas}) | hint: raise max_replicas or lower min_replicas")
        if self.max_replicas not in (None, self.min_replicas) and self.target_qps_per_replica is None:
            raise ValueError("autoscaling between min_replicas and max_replicas needs"
                             " target_qps_per_replica | hint: add target_qps_per_replica: 5")
        return self


class TLS(SpecModel):
    """Certificate files for HTTPS on the service endpoint."""

    keyfile: str
    certfile: str


class Service(SpecModel):
    """The ``service`` section of a task."""

    readiness_probe: ReadinessProbe | None = None
    replicas: int | None = Field(default=None, ge=0)
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

"""The ``resources`` section and its expansion into placement requirements."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from skyk.spec.base import SpecModel
from skyk.spec.disk import parse_disk_size
from skyk.spec.values import (
    AcceleratorChoice,
    Quantity,
    count_fits,
    parse_accelerators,
    parse_infra,
    parse_minutes,
    parse_ports,
    parse_quantity,
)
from skyk.spec.volumes import parse_resource_volumes


@dataclass(frozen=True)
class Autostop:
    """Stop (or tear down, with ``down``) a cluster after idle minutes."""

    idle_minutes: int
    down: bool = False


@dataclass(frozen=True)
class JobRecovery:
    """How a managed job recovers from preemption and errors."""

    strategy: str | None = None
    max_restarts_on_errors: int = 0
    #: exit codes after which the job is restarted, without counting against max_restarts_on_errors
    recover_on_exit_codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """One concrete placement request the optimizer matches offerings against.

    ``accelerator`` is None for CPU-only work. Unset pins are None.
    """

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    accelerator: str | None = None
    accelerator_count: float = 0.0
    cpus: Quantity | None = None
    memory: Quantity | None = None
    use_spot: bool = False
    max_hourly_cost: float | None = None
    #: Where the cloud pin and the accelerator were written (a field path such
    #: as ``resources.any_of[1].cloud``, or a flag such as ``--gpus``), so
    #: errors found later point at them.
    cloud_origin: str = "resources.cloud"
    accelerator_origin: str = "resources.accelerators"

    def where(self, origin: str, source: str) -> str:
        """Return ``origin`` prefixed by the task file, unless it is a flag."""
        return origin if origin.startswith("--") or not source else f"{source}: {origin}"

    def admits_count(self, offered: float) -> bool:
        """Whether a node with ``offered`` of the accelerator gives this request its count (see count_fits)."""
        return count_fits(self.accelerator_count, offered)

    @property
    def wants_defaults(self) -> bool:
        """Whether the task named nothing that sizes a machine (so cloud defaults apply)."""
        return not (self.accelerator or self.cpus or self.memory or self.instance_type)

    def describe(self) -> str:
        """Return a short human description such as ``A100:8 spot on aws``."""
        parts = []
        if self.accelerator:
            parts.append(f"{self.accelerator}:{self.accelerator_count:g}")
        if self.instance_type:
            parts.append(self.instance_type)
        if self.cpus:
            parts.append(f"cpus={self.cpus}")
        if self.memory:
            parts.append(f"memory={self.memory}")
        if not parts:
            parts.append("default CPU instance")
        if self.use_spot:
            parts.append("spot")
        where = "/".join(p for p in (self.cloud, self.region, self.zone) if p)
        if where:
            parts.append(f"on {where}")
        return " ".join(parts)


class ResourceFields(SpecModel):
    """The fields of ``resources`` (and of each ``any_of``/``ordered`` entry)."""

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    infra: str | None = None
    accelerators: Any = None
    accelerator_args: dict[str, Any] | None = None
    cpus: Any = None
    memory: Any = None
    instance_type: str | None = None
    use_spot: bool | None = None
    #: Whole GB; the YAML may give units (1TB), see :mod:`skyk.spec.disk`.
    disk_size: Any = None
    disk_tier: Literal["low", "medium", "high", "ultra", "best"] | None = None
    network_tier: Literal["standard", "best"] | None = None
    ports: Any = None
    labels: dict[str, str] | None = None
    image_id: Any = None
    job_recovery: Any = None
    #: SkyPilot's former name of job_recovery, still read (see _legacy_names).
    spot_recovery: Any = None
    #: Disks to attach (SkyPilot's resources.volumes); checked, not made yet.
    volumes: Any = None
    autostop: Any = None
    max_hourly_cost: float | None = Field(default=None, gt=0)

    @field_validator("accelerators", mode="before")
    @classmethod
    def _accelerators(cls, value: Any) -> AcceleratorChoice | None:
        return value if isinstance(value, AcceleratorChoice) else parse_accelerators(value)

    @field_validator("cpus", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info) -> Quantity | None:
        return value if isinstance(value, Quantity) else parse_quantity(value, info.field_name)

    @field_validator("disk_size", mode="before")
    @classmethod
    def _disk_size(cls, value: Any) -> int | None:
        return parse_disk_size(value)

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> tuple[tuple[int, int], ...]:
        return value if isinstance(value, tuple) else parse_ports(value)

    @field_validator("infra")
    @classmethod
    def _infra(cls, value: str | None) -> str | None:
        if value is not None:
            parse_infra(value)  # reject a malformed pin here, where its path is known
        return value

    @field_validator("cloud", mode="before")
    @classmethod
    def _cloud(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("image_id", mode="before")
    @classmethod
    def _image_id(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items()):
            return dict(value)
        raise ValueError("expected an image id or a mapping of region to image id"
                         " | hint: write image_id: ami-0123 or image_id: {us-east-1: ami-0123}")

    @field_validator("autostop", mode="before")
    @classmethod
    def _autostop(cls, value: Any) -> Autostop | None:
        if value is None or value is False or isinstance(value, Autostop):
            return value or None
        if value is True:
            return Autostop(5)
        if isinstance(value, dict):
            unknown = set(value) - {"idle_minutes", "down"}
            if unknown:
                raise ValueError(f"unknown autostop field {sorted(unknown)[0]!r}"
                                 " | hint: autostop takes idle_minutes and down")
            down = value.get("down", False)
            if not isinstance(down, bool):
                raise ValueError("autostop.down must be true or false")
            return Autostop(parse_minutes(value.get("idle_minutes", 5), "autostop.idle_minutes"), down)
        return Autostop(parse_minutes(value, "autostop"))

    @field_validator("volumes", mode="before")
    @classmethod
    def _volumes(cls, value: Any) -> list[dict[str, Any]]:
        return parse_resource_volumes(value)

    @field_validator("job_recovery", "spot_recovery", mode="before")
    @classmethod
    def _job_recovery(cls, value: Any) -> JobRecovery | None:
        if value is None or isinstance(value, JobRecovery):
            return value
        if isinstance(value, str):
            return JobRecovery(value.upper())
        if isinstance(value, dict):
            unknown = set(value) - {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"}
            if unknown:
                raise ValueError(f"unknown job_recovery field {sorted(unknown)[0]!r} | hint: job_recovery"
                                 " takes strategy, max_restarts_on_errors and recover_on_exit_codes")
            restarts = value.get("max_restarts_on_errors", 0)
            if not isinstance(restarts, int) or isinstance(restarts, bool) or not 0 <= restarts <= 10_000:
                raise ValueError("job_recovery.max_restarts_on_errors must be a whole number from 0 to 10000")
            strategy = value.get("strategy")
            if strategy is not None and not isinstance(strategy, str):
                raise ValueError("job_recovery.strategy must be a string such as EAGER_NEXT_REGION")
            codes = value.get("recover_on_exit_codes")
            codes = [] if codes is None else codes if isinstance(codes, list) else [codes]
            if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in codes):
                raise ValueError("job_recovery.recover_on_exit_codes must be exit codes from 0 to 255"
                                 " | hint: e.g. recover_on_exit_codes: [33, 34]")
            return JobRecovery(strategy.upper() if strategy else None, restarts, tuple(sorted(set(codes))))
        raise ValueError("expected a strategy name or a mapping"
                         " | hint: write job_recovery: EAGER_NEXT_REGION")

    @model_validator(mode="after")
    def _legacy_names(self) -> ResourceFields:
        # spot_recovery is read as job_recovery, so the rest of skyk (and
        # merging with any_of entries) sees one field.
        if "spot_recovery" in self.model_fields_set:
            if "job_recovery" in self.model_fields_set:
                raise ValueError("give either job_recovery or spot_recovery, not both"
                                 " | hint: spot_recovery is job_recovery's former name; keep job_recovery")
            object.__setattr__(self, "job_recovery", self.spot_recovery)
            object.__setattr__(self, "spot_recovery", None)
            self.model_fields_set.discard("spot_recovery")
            self.model_fields_set.add("job_recovery")
        return self

    @model_validator(mode="after")
    def _pins(self) -> ResourceFields:
        if self.infra is not None:
            if self.cloud or self.region or self.zone:
                raise ValueError("give either infra or cloud/region/zone, not both"
                                 " | hint: infra: aws/us-east-1 replaces cloud: aws + region: us-east-1")
            cloud, region, zone = parse_infra(self.infra)
            object.__setattr__(self, "cloud", cloud)
            object.__setattr__(self, "region", region)
            object.__setattr__(self, "zone", zone)
        return self

    def requirements(self) -> list[Requirement]:
        """Expand this section into one Requirement per accelerator option."""
        base = Requirement(
            cloud=self.cloud, region=self.region, zone=self.zone,
            instance_type=self.instance_type, cpus=self.cpus, memory=self.memory,
            use_spot=bool(self.use_spot), max_hourly_cost=self.max_hourly_cost,
        )
        if self.accelerators is None:
            return [base]
        return [replace(base, accelerator=a.name, accelerator_count=a.count)
                for a in self.accelerators.options]

    def merged(self, override: ResourceFields) -> ResourceFields:
        """Return these fields with the fields ``override`` set explicitly on top."""
        values = self._explicit()
        if "infra" in override.model_fields_set:
            # infra pins the whole location, so it replaces every part of ours.
            for key in ("cloud", "region", "zone"):
                values.pop(key, None)
        values.update(override._explicit())
        return type(self).model_validate(values)

    def _explicit(self) -> dict[str, Any]:
        """The fields set explicitly, with ``infra`` spelled out as cloud/region/zone."""
        values = {k: getattr(self, k) for k in self.model_fields_set}
        if values.pop("infra", None) is not None:
            for key in ("cloud", "region", "zone"):
                if getattr(self, key) is not None:
                    values[key] = getattr(self, key)
        return values


class Resources(ResourceFields):
    """The ``resources`` section: fields plus ``any_of`` / ``ordered`` alternatives."""

    any_of: list[ResourceFields] | None = None
    ordered: list[ResourceFields] | None = None

    @model_validator(mode="after")
    def _alternatives(self) -> Resources:
        if self.any_of is not None and self.ordered is not None:
            raise ValueError("give either any_of or ordered, not both"
                             " | hint: any_of picks the cheapest, ordered the first that fits")
        for key in ("any_of", "ordered"):
            if getattr(self, key) == []:
                raise ValueError(f"{key} is empty | hint: list at least one alternative, or remove {key}")
        return self

    @property
    def is_ordered(self) -> bool:
        """Whether candidates are ranked by the user's preference rather than by price."""
        return self.ordered is not None or bool(self.accelerators and self.accelerators.ordered)

    def requirements_with(self, override: ResourceFields | None = None,
                          flags: dict[str, str] | None = None) -> list[Requirement]:
        """Expand into every Requirement the optimizer should consider, in preference order.

        ``override`` (from command-line flags) applies on top of each alternative;
        ``flags`` maps its field names to the flags that set them, for errors.
        """
        explicit = self._explicit()
        explicit.pop("any_of", None)
        explicit.pop("ordered", None)
        base = ResourceFields.model_validate(explicit)
        key = "any_of" if self.any_of else "ordered"
        alternatives = self.any_of or self.ordered or [ResourceFields()]
        found: list[Requirement] = []
        for index, alternative in enumerate(alternatives):
            fields = base.merged(alternative)
            layers = [(self, "resources"), (alternative, f"resources.{key}[{index}]")]
            if override is not None:
                fields = fields.merged(override)
                layers.append((override, None))
            origins = {}
            for field in ("cloud", "accelerators"):
                for layer, path in layers:
                    for name in ((field, "infra") if field == "cloud" else (field,)):
                        if name in layer.model_fields_set:
                            origins[field] = (f"{path}.{name}" if path else
                                              (flags or {}).get(name, f"--{name}"))
            found.extend(replace(r, cloud_origin=origins.get("cloud", "resources.cloud"),
                                 accelerator_origin=origins.get("accelerators",
                                                                "resources.accelerators"))
                         for r in fields.requirements())
        return found

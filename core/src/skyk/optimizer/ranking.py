"""Rank feasible offerings for a task's requirements; explain when none fits."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from skyk.catalog.accelerators import AcceleratorNames
from skyk.catalog.offering import Offering, format_count
from skyk.catalog.store import Catalog
from skyk.errors import NoFeasibleResources
from skyk.spec.resources import Requirement
from skyk.spec.values import Quantity

#: A place provisioning failed: (cloud, region, zone, instance type); region or
#: zone None blocks the whole cloud or region, instance type None every type there.
Location = tuple[str, str | None, str | None, str | None]


class Candidate(NamedTuple):
    """A feasible offering for one requirement, with the cost of all nodes.

    A NamedTuple: a CPU-only request ranks tens of thousands of these.
    """

    offering: Offering
    requirement: Requirement
    preference: int
    hourly_cost: float

    @property
    def use_spot(self) -> bool:
        """Whether this candidate is bought as spot."""
        return self.requirement.use_spot


@dataclass(frozen=True)
class Plan:
    """The optimizer's answer: candidates best first, and how many were weighed."""

    candidates: tuple[Candidate, ...]
    considered: int

    @property
    def best(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[0]

    def best_per_cloud(self) -> list[Candidate]:
        """The best candidate of each cloud, in rank order."""
        seen: set[str] = set()
        out = []
        for candidate in self.candidates:
            if candidate.offering.cloud not in seen:
                seen.add(candidate.offering.cloud)
                out.append(candidate)
        return out


def canonicalize(requirements: Sequence[Requirement], names: AcceleratorNames,
                 source: str) -> list[Requirement]:
    """Return requirements with accelerator names spelled as the catalogs spell them.

    ``source`` (the task file) prefixes errors about names written in it.
    """
    return [replace(r, accelerator=names.canonical(r.accelerator,
                                                   r.where(r.accelerator_origin, source)))
            if r.accelerator else r for r in requirements]


def is_blocked(offering: Offering, blocked: Collection[Location]) -> bool:
    """Whether provisioning already failed at this offering's cloud, region or zone."""
    return any(cloud == offering.cloud and region in (None, offering.region)
               and zone in (None, offering.zone) and kind in (None, offering.instance_type)
               for cloud, region, zone, kind in blocked)


def _pool(catalog: Catalog, req: Requirement, cloud: str | None = None) -> list[Offering]:
    """The offerings that can match ``req`` at all: by accelerator, or by instance type.

    A CPU-only request never lands on a GPU machine, unless it names the
    instance type (which carries its own accelerators, like g5.xlarge).
    """
    cloud = cloud or req.cloud
    if req.instance_type and not req.accelerator:
        return catalog.all() if cloud is None else catalog.of_cloud(cloud)
    return catalog.with_accelerator(req.accelerator, cloud)


def _sizing(req: Requirement, defaults: Mapping[str, tuple[float | None, float | None]],
            cloud: str) -> tuple[Quantity | None, Quantity | None]:
    if req.wants_defaults:
        cpus, memory = defaults.get(cloud, (None, None))
        return (Quantity(cpus, True) if cpus else None, Quantity(memory, True) if memory else None)
    return req.cpus, req.memory


def _feasible(req: Requirement, offering: Offering,
              sizing: tuple[Quantity | None, Quantity | None]) -> bool:
    if req.cloud and offering.cloud != req.cloud:
        return False
    if req.region and offering.region != req.region:
        return False
    if req.zone and offering.zone != req.zone:
        return False
    if req.instance_type and offering.instance_type != req.instance_type:
        return False
    if req.accelerator and not req.admits_count(offering.accelerator_count):
        return False
    cpus, memory = sizing
    if cpus and not cpus.admits(offering.vcpus):
        return False
    if memory and not memory.admits(offering.memory_gib):
        return False
    return offering.hourly_price(req.use_spot) is not None


def rank(catalog: Catalog, requirements: Sequence[Requirement], *, num_nodes: int = 1,
         ordered: bool = False, blocked: Collection[Location] = (),
         defaults: Mapping[str, tuple[float | None, float | None]] | None = None,
         preferences: Sequence[int] | None = None) -> Plan:
    """Rank every feasible (offering, requirement) pair, cheapest first.

    :param requirements: canonicalised requirements, in the user's preference order.
    :param num_nodes: nodes per cluster; multiplies every cost.
    :param ordered: rank by preference first (``ordered:`` or a list of accelerators),
        then by cost; otherwise by cost alone.
    :param blocked: locations where provisioning failed; offerings there are skipped.
    :param defaults: per cloud, the (vCPUs, GiB) floor for tasks that size nothing.
    :param preferences: the preference of each requirement when several share one
        (GPU sets sized for one ``ordered`` alternative); default: its position.
    :raises NoFeasibleResources: with a reason per cloud, when nothing fits.
    """
    defaults = defaults or {}
    found: dict[tuple, Candidate] = {}
    considered = 0
    for index, req in enumerate(requirements):
        preference = preferences[index] if preferences is not None else index
        # Sized once per cloud, not once per offering: a CPU-only pool is tens of thousands.
        sizing = {cloud: _sizing(req, defaults, cloud) for cloud in catalog.offered_clouds}
        for offering in _pool(catalog, req):
            if not _feasible(req, offering, sizing[offering.cloud]):
                continue
            cost = offering.hourly_price(req.use_spot) * num_nodes
            if req.max_hourly_cost is not None and cost > req.max_hourly_cost + 1e-9:
                continue
            considered += 1
            if blocked and is_blocked(offering, blocked):
                continue
            key = (offering, req.use_spot)
            if key not in found:
                found[key] = Candidate(offering, req, preference, cost)
    if not found:
        raise NoFeasibleResources(
            explain(catalog, requirements, num_nodes, blocked, defaults),
            hint="run 'skyk show-gpus' to see what each cloud offers, or relax the request")

    def order(c: Candidate) -> tuple:
        o = c.offering
        head = (c.preference,) if ordered else ()
        return head + (c.hourly_cost, o.cloud, o.region, o.zone or "", o.instance_type)

    return Plan(tuple(sorted(found.values(), key=order)), considered)


def explain(catalog: Catalog, requirements: Sequence[Requirement], num_nodes: int,
            blocked: Collection[Location],
            defaults: Mapping[str, tuple[float | None, float | None]]) -> str:
    """Say, per cloud in scope, why no offering satisfies ``requirements``."""
    wanted = "; or ".join(dict.fromkeys(r.describe() for r in requirements))
    reasons = []
    for cloud in catalog.clouds:
        if all(r.cloud and r.cloud != cloud for r in requirements):
            continue
        if cloud in catalog.errors:
            reasons.append(f"{cloud}: {catalog.errors[cloud]}")
            continue
        why = dict.fromkeys(_why_not(catalog, cloud, r, num_nodes, blocked, defaults)
                            for r in requirements if not r.cloud or r.cloud == cloud)
        reasons.append(f"{cloud}: {'; '.join(why)}")
    if not reasons:
        return f"no enabled cloud can run {wanted}"
    return f"no offering satisfies {wanted}: " + " | ".join(reasons)


def _unknown_place(catalog: Catalog, cloud: str, req: Requirement) -> str | None:
    """``no region us-east-99 (did you mean us-east-1?)`` when ``cloud`` has no such region
    or zone at all, so a typo is not reported as missing instances there."""
    import difflib

    offerings = catalog.of_cloud(cloud)
    for kind, wanted, known in (("region", req.region, {o.region for o in offerings}),
                                ("zone", req.zone, {o.zone for o in offerings if o.zone})):
        if wanted and wanted not in known:
            close = difflib.get_close_matches(wanted, sorted(known), n=1)
            return f"no {kind} {wanted}" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def _why_not(catalog: Catalog, cloud: str, req: Requirement, num_nodes: int,
             blocked: Collection[Location],
             defaults: Mapping[str, tuple[float | None, float | None]]) -> str:
    offers = _pool(catalog, req, cloud)
    what = req.accelerator or ("instances" if req.instance_type else "CPU-only instances")
    if not offers:
        return f"no {what}"
    if req.accelerator:
        counts = sorted({o.accelerator_count for o in offers})
        offers = [o for o in offers if req.admits_count(o.accelerator_count)]
        if not offers:
            shown = ", ".join(format_count(c) for c in counts)
            return f"{req.accelerator} comes only in counts {shown}"
    steps = (
        (lambda o: not req.instance_type or o.instance_type == req.instance_type,
         f"no instance type {req.instance_type} with {what}"),
        (lambda o: not req.region or o.region == req.region, f"no {what} in region {req.region}"),
        (lambda o: not req.zone or o.zone == req.zone, f"no {what} in zone {req.zone}"),
    )
    for keep, reason in steps:
        offers = [o for o in offers if keep(o)]
        if not offers:
            return _unknown_place(catalog, cloud, req) or reason
    cpus, memory = _sizing(req, defaults, cloud)
    if cpus:
        fitting = [o for o in offers if cpus.admits(o.vcpus)]
        if not fitting:
            return f"none with {cpus} vCPUs (largest: {max(o.vcpus for o in offers):g})"
        offers = fitting
    if memory:
        fitting = [o for o in offers if memory.admits(o.memory_gib)]
        if not fitting:
            return f"none with {memory} GiB memory (largest: {max(o.memory_gib for o in offers):g})"
        offers = fitting
    priced = [o for o in offers if o.hourly_price(req.use_spot) is not None]
    if not priced:
        return f"no {'spot' if req.use_spot else 'on-demand'} price for {what}"
    cheapest = min(o.hourly_price(req.use_spot) for o in priced) * num_nodes
    if req.max_hourly_cost is not None and cheapest > req.max_hourly_cost:
        return f"cheapest is ${cheapest:.2f}/h, over max_hourly_cost ${req.max_hourly_cost:.2f}/h"
    if all(is_blocked(o, blocked) for o in priced):
        return f"every location with {what} failed to provision"
    return "no match"

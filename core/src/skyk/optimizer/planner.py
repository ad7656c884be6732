"""From a task to a ranked plan: load the clouds it can use, their catalogs, and rank."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace

from skyk.catalog.accelerators import AcceleratorNames, not_offered
from skyk.catalog.gpus import gpu_spec
from skyk.catalog.store import Catalog
from skyk.errors import CatalogError, NoFeasibleResources, PluginError
from skyk.optimizer.model_size import (
    TENSOR_PARALLEL_SIZES,
    Estimate,
    GpuFit,
    ModelSizing,
    estimate,
    fitting_sets,
    runtime_model,
)
from skyk.optimizer.ranking import Location, Plan, canonicalize, rank
from skyk.plugins.clouds import check_cloud_names, disabled_clouds
from skyk.plugins.manager import Kernel
from skyk.spec.resources import Requirement, ResourceFields
from skyk.spec.task import Task


@dataclass(frozen=True)
class PlannedTask:
    """A task's plan together with what produced it (for tables and failover)."""

    task: Task
    plan: Plan
    catalog: Catalog
    kernel: Kernel
    ordered: bool
    #: The served model's memory estimate and GPU sets, when they chose the accelerators.
    sizing: ModelSizing | None = None


def plan_task(task: Task, override: ResourceFields | None = None,
              blocked: Collection[Location] = (), flags: dict[str, str] | None = None,
              enabled_only: bool = False) -> PlannedTask:
    """Rank where ``task`` can run, cheapest (or most preferred) first.

    Only the clouds the task can use are loaded, so a pinned task never
    reads the other clouds' catalogs; with ``enabled_only`` (a real launch)
    only those whose credentials ``skyk check`` finds. A task whose ``runtime:`` serves a
    model, where the resources name no accelerators, gets the GPU sets that
    hold the model (see ``skyk.optimizer.model_size``). ``task`` is a Task,
    or any object with its ``resources``, ``source``, ``num_nodes`` and
    optionally ``runtime``.
    """
    requirements = task.resources.requirements_with(override, flags)
    served = runtime_model(task)
    # Estimated before any catalog is read, so a model of unknown size fails at once.
    need = (estimate(served[0], served[1], f"{task.source}: runtime")
            if served and any(names_no_hardware(r) for r in requirements) else None)
    names = check_cloud_names((r.cloud, r.where(r.cloud_origin, task.source)) for r in requirements)
    kernel = Kernel.load(("cloud",), names)
    for failure in kernel.failures:
        if names is not None and failure.name in names:
            raise PluginError(f"cloud plugin '{failure.name}' ({failure.distribution}) failed to load:"
                              f" {failure.error}", hint="reinstall it; 'skyk plugins' lists every plugin")
    disabled = disabled_clouds(kernel) if enabled_only else {}
    if disabled and set(disabled) == set(kernel.clouds()):
        reasons = "; ".join(f"{n}: {why}" for n, why in sorted(disabled.items()))
        raise NoFeasibleResources(f"{task.source}: no enabled cloud can run the task ({reasons})",
                                  hint="'skyk check' says how to enable each cloud")
    catalog = Catalog.load(kernel)
    known = catalog.accelerator_names()
    if catalog.errors and any(r.accelerator and r.accelerator not in known for r in requirements):
        problems = "; ".join(f"{c}: {e}" for c, e in sorted(catalog.errors.items()))
        raise CatalogError(f"cannot check accelerator names, some catalogs are unusable: {problems}",
                           hint="run 'skyk catalog refresh' or set SKYK_CATALOG_DIR")
    requirements = canonicalize(requirements, known, task.source)
    check_offered(requirements, known, names, task.source)
    sizing, preferences = None, None
    if need is not None:
        sizing, requirements, preferences = size_for_model(need, requirements, catalog,
                                                           f"{task.source}: runtime.model")
    if disabled:
        # Names were checked against every installed cloud; places come from enabled ones only.
        catalog = catalog.without(disabled)
    defaults = {name: (cloud.default_cpus, cloud.default_memory_gib)
                for name, cloud in kernel.clouds().items()}
    try:
        plan = rank(catalog, requirements, num_nodes=task.num_nodes,
                    ordered=task.resources.is_ordered, blocked=blocked, defaults=defaults,
                    preferences=preferences)
    except NoFeasibleResources as exc:
        if disabled:
            reasons = "; ".join(f"{n}: {why}" for n, why in sorted(disabled.items()))
            raise NoFeasibleResources(f"{task.source}: {exc.message} (not enabled, so not considered:"
                                      f" {reasons})", hint=f"{exc.hint}; 'skyk check' says how to enable"
                                      " the others") from None
        raise NoFeasibleResources(f"{task.source}: {exc.message}", hint=exc.hint) from None
    return PlannedTask(task, plan, catalog, kernel, task.resources.is_ordered, sizing)


def check_offered(requirements: list[Requirement], offered: AcceleratorNames,
                  clouds: Collection[str] | None, source: str) -> None:
    """Raise when every alternative names an accelerator no loaded cloud offers.

    Such a name is real (SkyPilot knows it) but sold by none of ``clouds``
    (None: every installed cloud); beside other alternatives it is just one
    that nothing fits, and ranking skips it.
    """
    missing = [r for r in requirements if r.accelerator and r.accelerator not in offered]
    if missing and len(missing) == len(requirements):
        first = missing[0]
        raise not_offered((r.accelerator for r in missing), clouds,
                          first.where(first.accelerator_origin, source))


def names_no_hardware(requirement: Requirement) -> bool:
    """Whether ``requirement`` leaves the hardware open: no accelerator and no instance type."""
    # An instance type names its accelerators too (g5.12xlarge is A10G:4).
    return not (requirement.accelerator or requirement.instance_type)


def size_for_model(need: Estimate, requirements: list[Requirement], catalog: Catalog,
                   where: str) -> tuple[ModelSizing | None, list[Requirement], list[int]]:
    """Put the GPU sets that hold ``need`` in place of requirements that name no hardware.

    Returns the sizing (None when nothing was sized), the requirements and
    each one's preference: sets sized for one alternative share its place,
    so ``ordered:`` still prefers whole alternatives. A requirement whose
    clouds offer no GPU that skyk can size (the local cloud on a machine
    without one) stays as written. Raises ``NoFeasibleResources`` when GPUs
    are offered but no set of them holds the model; ``where`` prefixes it.
    """
    offered: dict[str, dict[str, set[float]]] = defaultdict(lambda: defaultdict(set))
    for name in catalog.accelerator_names():
        if gpu_spec(name) is not None:
            for offering in catalog.with_accelerator(name):
                offered[offering.cloud][name].add(offering.accelerator_count)
    everywhere: dict[str, set[float]] = defaultdict(set)
    for by_name in offered.values():
        for name, counts in by_name.items():
            everywhere[name] |= counts
    fits = fitting_sets(need, everywhere)
    out: list[Requirement] = []
    preferences: list[int] = []
    tried = used = 0
    for index, req in enumerate(requirements):
        scope = offered.get(req.cloud, {}) if req.cloud else everywhere
        if not names_no_hardware(req) or not scope:
            out.append(req)
            preferences.append(index)
            continue
        tried += 1
        for fit in fits:
            if fit.count in scope.get(fit.accelerator, ()):
                out.append(replace(req, accelerator=fit.accelerator, accelerator_count=float(fit.count),
                                   accelerator_origin="runtime.model"))
                preferences.append(index)
                used += 1
    if tried and not out:
        raise NoFeasibleResources(_too_big(need, everywhere, where),
                                  hint="serve a quantized model (quantization: awq or fp8), or give"
                                       " resources.accelerators and num_nodes yourself")
    # Alternatives the user sized themselves may remain when no GPU set held the model.
    return (ModelSizing(need, tuple(fits)) if used else None), out, preferences


def _too_big(need: Estimate, offered: dict[str, set[float]], where: str) -> str:
    message = (f"{where}: {need.model} needs ~{need.needed_gib:.0f} GiB of GPU memory, more than"
               f" any set of up to {TENSOR_PARALLEL_SIZES[-1]} GPUs offered holds")
    sets = [GpuFit(name, int(count), spec.memory_gib, need.usable_fraction, need.needed_gib)
            for name, counts in offered.items() if (spec := gpu_spec(name))
            for count in counts if count in TENSOR_PARALLEL_SIZES]
    if sets:
        largest = max(sets, key=lambda f: f.usable_gib)
        message += (f" (largest: {largest.count}x {largest.accelerator},"
                    f" {largest.usable_gib:.0f} GiB usable)")
    return message

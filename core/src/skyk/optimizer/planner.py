"""From a task to a ranked plan: load the clouds it can use, their catalogs, and rank."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

from skyk.catalog.store import Catalog
from skyk.errors import CatalogError, NoFeasibleResources, PluginError, SpecError
from skyk.optimizer.ranking import Location, Plan, canonicalize, rank
from skyk.plugins.kinds import disabled_plugins
from skyk.plugins.manager import Kernel, discover
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


def check_cloud_names(requirements: list[Requirement], source: str) -> set[str] | None:
    """Return the pinned cloud names, or None if any requirement may use every cloud.

    Raises ``SpecError`` for a cloud that is not installed or is disabled,
    naming where it was written (``source`` is the task file or command).
    """
    pinned = {r.cloud for r in requirements}
    if None in pinned:
        return None
    installed = sorted({name for name, _ in discover("cloud")})
    blocked = disabled_plugins()
    for requirement in requirements:
        cloud = requirement.cloud
        where = requirement.where(requirement.cloud_origin, source)
        if cloud in blocked:
            raise SpecError(f"{where}: cloud '{cloud}' is disabled by SKYK_DISABLE_PLUGINS",
                            hint="remove it from SKYK_DISABLE_PLUGINS or pick another cloud")
        if cloud not in installed:
            close = difflib.get_close_matches(cloud, installed, n=1, cutoff=0.5)
            message = f"{where}: unknown cloud '{cloud}'"
            if close:
                message += f"; did you mean {close[0]}?"
            raise SpecError(message, hint=f"installed clouds: {', '.join(installed)};"
                            " add one with pip install skyk-<cloud>")
    return pinned  # type: ignore[return-value]


def load_clouds(clouds: list[str] | None, origin: str) -> Kernel:
    """Load the cloud plugins a command names (all when ``clouds`` is empty or None).

    ``origin`` (a flag or command) prefixes the error for an unknown cloud.
    """
    names = None
    if clouds:
        names = check_cloud_names([Requirement(cloud=c.lower(), cloud_origin=origin)
                                   for c in clouds], "")
    return Kernel.load(("cloud",), names)


def plan_task(task: Task, override: ResourceFields | None = None,
              blocked: Collection[Location] = (), flags: dict[str, str] | None = None
              ) -> PlannedTask:
    """Rank where ``task`` can run, cheapest (or most preferred) first.

    Only the clouds the task can use are loaded, so a pinned task never
    reads the other clouds' catalogs.
    """
    requirements = task.resources.requirements_with(override, flags)
    names = check_cloud_names(requirements, task.source)
    kernel = Kernel.load(("cloud",), names)
    for failure in kernel.failures:
        if names is not None and failure.name in names:
            raise PluginError(f"cloud plugin '{failure.name}' ({failure.distribution}) failed to load:"
                              f" {failure.error}", hint="reinstall it; 'skyk plugins' lists every plugin")
    catalog = Catalog.load(kernel)
    known = catalog.accelerator_names()
    if catalog.errors and any(r.accelerator and r.accelerator not in known for r in requirements):
        problems = "; ".join(f"{c}: {e}" for c, e in sorted(catalog.errors.items()))
        raise CatalogError(f"cannot check accelerator names, some catalogs are unusable: {problems}",
                           hint="run 'skyk catalog refresh' or set SKYK_CATALOG_DIR")
    requirements = canonicalize(requirements, known, task.source)
    defaults = {name: (cloud.default_cpus, cloud.default_memory_gib)
                for name, cloud in kernel.clouds().items()}
    try:
        plan = rank(catalog, requirements, num_nodes=task.num_nodes,
                    ordered=task.resources.is_ordered, blocked=blocked, defaults=defaults)
    except NoFeasibleResources as exc:
        raise NoFeasibleResources(f"{task.source}: {exc.message}", hint=exc.hint) from None
    return PlannedTask(task, plan, catalog, kernel, task.resources.is_ordered)

"""Whether an existing cluster can take a task, checked before a launch reuses or restarts it.

As in SkyPilot, a launch on a cluster that is up (or stopped) runs there
only if the cluster gives the task what it asks for: enough nodes, the
cloud/region/zone/instance type it pins, its accelerators, its vCPUs and
memory, and, for a task that serves a model with no accelerators named,
GPU memory that holds the model (the same estimate a new cluster is sized
by, see :mod:`skyk.optimizer.model_size`).
"""

from __future__ import annotations

import functools

from skyk.catalog.offering import Offering
from skyk.errors import SkykError
from skyk.provision.types import ClusterHandle
from skyk.spec.resources import Requirement, ResourceFields


class _Host:
    """What the cluster's cloud catalog says about its nodes, looked up only when needed."""

    def __init__(self, handle: ClusterHandle) -> None:
        self._handle = handle

    @functools.cached_property
    def _offerings(self) -> list[Offering]:
        from skyk.catalog.store import Catalog
        from skyk.plugins.manager import Kernel

        catalog = Catalog.load(Kernel.load(("cloud",), {self._handle.cloud}))
        return catalog.of_cloud(self._handle.cloud)

    @functools.cached_property
    def offering(self) -> Offering | None:
        """The node's instance type in its region, or None when the catalog no longer lists it."""
        handle = self._handle
        matches = [o for o in self._offerings
                   if o.instance_type == handle.instance_type and o.region == handle.region]
        return matches[0] if matches else None

    def offers_gpus(self) -> bool:
        """Whether the cloud sells any GPU skyk can size a model for."""
        from skyk.catalog.gpus import gpu_spec

        return any(o.accelerator and gpu_spec(o.accelerator) for o in self._offerings)


def _admits(req: Requirement, handle: ClusterHandle, host: _Host) -> bool:
    pins = ((req.cloud, handle.cloud), (req.region, handle.region), (req.zone, handle.zone),
            (req.instance_type, handle.instance_type))
    if any(want is not None and want.lower() != (have or "").lower() for want, have in pins):
        return False
    if req.accelerator is not None and not (
            req.accelerator.lower() == (handle.accelerator or "").lower()
            and req.accelerator_count <= handle.accelerator_count):
        return False
    if (req.cpus or req.memory) and host.offering is not None:
        offering = host.offering
        if req.cpus and not req.cpus.admits(offering.vcpus):
            return False
        if req.memory and not req.memory.admits(offering.memory_gib):
            return False
    return True


def _model_problem(task, requirements: list[Requirement], handle: ClusterHandle, host: _Host) -> str | None:
    """Why the cluster's GPUs cannot hold the model the task serves, or None."""
    from skyk.catalog.gpus import gpu_spec
    from skyk.optimizer.model_size import estimate, gib, runtime_model
    from skyk.optimizer.planner import names_no_hardware

    served = runtime_model(task)
    if served is None or not all(names_no_hardware(r) for r in requirements):
        return None
    need = estimate(served[0], served[1], f"{task.source}: runtime")
    spec = gpu_spec(handle.accelerator) if handle.accelerator else None
    if spec is None:
        # A new cluster on a cloud without GPUs runs the task as written; so may this one.
        if not host.offers_gpus():
            return None
        return f"has no GPU, and {need.model} needs ~{gib(need.needed_gib)} GiB of GPU memory"
    usable = handle.accelerator_count * spec.memory_gib * need.usable_fraction
    if usable >= need.needed_gib:
        return None
    return (f"has {gib(usable)} GiB of usable GPU memory, and {need.model} needs"
            f" ~{gib(need.needed_gib)} GiB")


def check_fits(task, override: ResourceFields | None, flags: dict[str, str] | None,
               handle: ClusterHandle) -> None:
    """Raise ``SkykError`` if the cluster of ``handle`` cannot give ``task`` what it asks for."""
    requirements = task.resources.requirements_with(override, flags)
    host = _Host(handle)
    if task.num_nodes > len(handle.nodes) or not any(_admits(r, handle, host) for r in requirements):
        problem = "does not have the resources this task asks for"
    else:
        problem = _model_problem(task, requirements, handle, host)
    if problem:
        have = f"{len(handle.nodes)}x {handle.instance_type}" + (
            f" {{{handle.accelerator}:{handle.accelerator_count:g}}}" if handle.accelerator else "")
        raise SkykError(f"cluster {handle.cluster} ({have} on {handle.infra}) {problem}",
                        hint=f"launch it on a new cluster name, or 'skyk down {handle.cluster}' first")


def accelerator_demand(task, override: ResourceFields | None, flags: dict[str, str] | None,
                       handle: ClusterHandle) -> float | None:
    """The accelerators per node ``task`` asks of this cluster's nodes, or None if it names none.

    The count comes from the first alternative naming the cluster's accelerator
    (``T4:0.5`` gives 0.5), so the agent can run jobs side by side while their counts fit
    the node (see ``skyk.agent.sharing``).
    """
    have = (handle.accelerator or "").lower()
    for req in task.resources.requirements_with(override, flags):
        if req.accelerator is not None and req.accelerator.lower() == have:
            return req.accelerator_count
    return None

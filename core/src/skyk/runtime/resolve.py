"""Apply a task's ``runtime:`` section: the runtime plugin writes what the user left out.

What the user wrote always wins: a task's own ``setup``, ``run`` or
``service.readiness_probe`` is kept as written, and the runtime fills in
only the missing ones. That is what a SkyPilot user expects (``run`` is the
command that runs) and it leaves an escape hatch for anything the generated
command cannot express. The port comes from ``service.ports``, else the
first of ``resources.ports``, else 8000, which is then written into
``resources.ports`` so the cloud opens it and the serve controller probes it.

Loading a runtime imports its plugin, so only commands that act on a task
with a ``runtime:`` section come here; ``import skyk`` and ``skyk status``
never do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skyk.errors import SpecError
from skyk.runtime.base import Runtime, RuntimeRecipe

if TYPE_CHECKING:
    from skyk.spec.task import Task

#: The engine's port when the task names none.
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Resolution:
    """What a task's runtime contributes: generated commands, port, probe path and metrics."""

    runtime: Runtime
    recipe: RuntimeRecipe
    setup: str
    run: str
    readiness_path: str
    queue_metrics: tuple[str, ...]

    @property
    def port(self) -> int:
        """The port the engine listens on."""
        return self.recipe.port


def load_runtime(engine: str, source: str = "<task>") -> Runtime:
    """Return the installed runtime named ``engine``, importing only its plugin when it can.

    :raises SpecError: naming ``source``'s ``runtime.engine`` when no
        installed runtime has that name (listing those that are), when it is
        blocked by ``SKYK_DISABLE_PLUGINS`` or when its plugin fails to import.
    """
    from skyk.plugins.manager import Kernel

    engine = engine.lower()
    # A plugin is usually named after its runtime: load just that one.
    kernel = Kernel.load(("runtime",), [engine])
    found = kernel.runtimes().get(engine)
    if found is not None:
        return found
    # A plugin may provide runtimes under other names: look through them all.
    everything = Kernel.load(("runtime",))
    runtimes = everything.runtimes()
    if engine in runtimes:
        return runtimes[engine]
    raise _missing(engine, source, everything, sorted(runtimes))


def _missing(engine: str, source: str, kernel: Any, installed: list[str]) -> SpecError:
    from skyk.spec.base import suggest

    where = f"{source}: runtime.engine"
    for info in kernel.plugins:
        if info.name.lower() != engine:
            continue
        if info.disabled:
            return SpecError(f"{where}: the runtime {engine} is disabled by SKYK_DISABLE_PLUGINS",
                             hint=f"remove {engine} from SKYK_DISABLE_PLUGINS")
        if info.error:
            return SpecError(f"{where}: the runtime plugin {engine} ({info.distribution}"
                             f" {info.version}) failed to load: {info.error}",
                             hint=f"reinstall {info.distribution}; 'skyk plugins' shows every plugin")
    close = suggest(engine, installed)
    return SpecError(f"{where}: no runtime named '{engine}' is installed"
                     + (f"; did you mean {close}?" if close else ""),
                     hint=f"installed runtimes: {', '.join(installed) or 'none'};"
                          " a runtime is a plugin package: from a skyk checkout, pip install ./plugins/runtimes/vllm")


def engine_port(task: Task) -> int:
    """Return the port the engine serves on: ``service.ports``, first ``resources.ports``, or 8000."""
    if task.service is not None and task.service.ports:
        return task.service.ports
    ports = task.resources.ports or ()
    return ports[0][0] if ports else DEFAULT_PORT


def plan(task: Task) -> Resolution | None:
    """Check ``task``'s runtime section against its plugin and build what it contributes.

    :return: None for a task without ``runtime:``.
    :raises SpecError: one line naming the field, for an unknown engine, an
        engine argument the runtime rejects, an ``api_key`` that is not a
        secret of the task, or a generated command asked to span nodes.
    """
    section = task.runtime
    if section is None:
        return None
    source = task.source
    runtime = load_runtime(section.engine, source)
    if section.api_key is not None and section.api_key not in task.secrets:
        raise SpecError(f"{source}: runtime.api_key: {section.api_key} is not a secret of this task",
                        hint=f"add 'secrets: {{{section.api_key}: null}}' and pass"
                             f" --secret {section.api_key}")
    generates_run = task.run is None
    if generates_run:
        # Arguments reach the engine only through the generated command.
        from skyk.spec.runtime import flag_name

        for key, value in section.args.items():
            try:
                runtime.check_arg(flag_name(key), value)
            except ValueError as exc:
                message, _, hint = str(exc).partition(" | hint: ")
                raise SpecError(f"{source}: runtime.args.{key}: {message}", hint=hint or None) from None
        if task.num_nodes > 1:
            raise SpecError(f"{source}: runtime: the {runtime.name} command skyk writes serves on one"
                            f" node, but num_nodes is {task.num_nodes}",
                            hint="drop num_nodes (tensor parallelism uses every GPU of the node),"
                                 " or write run yourself")
    recipe = RuntimeRecipe(model=section.model, port=engine_port(task), version=section.version,
                           engine_args=section.flags, api_key_env=section.api_key)
    return Resolution(runtime, recipe, setup=runtime.setup_command(recipe),
                      run=runtime.serve_command(recipe), readiness_path=runtime.readiness_path,
                      queue_metrics=tuple(runtime.queue_metrics))


def resolve_task(task: Task) -> Task:
    """Return ``task`` with its runtime's setup, run, readiness probe and port filled in.

    A task without ``runtime:`` comes back unchanged (the same object). Fields
    the task sets itself are kept; see the module docstring.
    """
    resolution = plan(task)
    if resolution is None:
        return task
    from skyk.spec.service import ReadinessProbe

    updates: dict[str, Any] = {}
    if task.setup is None:
        updates["setup"] = resolution.setup
    if task.run is None:
        updates["run"] = resolution.run
    if not task.resources.ports:
        port = resolution.port
        updates["resources"] = task.resources.model_copy(update={"ports": ((port, port),)})
    if task.service is not None and task.service.readiness_probe is None:
        probe = ReadinessProbe(path=resolution.readiness_path)
        updates["service"] = task.service.model_copy(update={"readiness_probe": probe})
    resolved = task.model_copy(update=updates)
    resolved._source = task._source
    return resolved


def resolve_mapping(mapping: Mapping[str, Any], task: Task) -> dict[str, Any]:
    """Return the task YAML ``mapping`` with what its runtime generates written in.

    For a service record: its controller re-reads the mapping without
    loading runtime plugins. ``task`` is ``mapping`` validated (with the
    command line's overrides), so checks see the secrets the user passed.
    Resolving a resolved mapping changes nothing.
    """
    resolution = plan(task)
    out = dict(mapping)
    if resolution is None:
        return out
    if task.setup is None:
        out["setup"] = resolution.setup
    if task.run is None:
        out["run"] = resolution.run
    if not task.resources.ports:
        out["resources"] = {**(mapping.get("resources") or {}), "ports": [resolution.port]}
    if task.service is not None and task.service.readiness_probe is None:
        out["service"] = {**(mapping.get("service") or {}),
                          "readiness_probe": {"path": resolution.readiness_path}}
    return out


def queue_metrics(task: Task | Mapping[str, Any]) -> tuple[str, ...]:
    """Return the Prometheus gauges that count requests queued in ``task``'s engine.

    For the serve controller's queue-length autoscaling: the names its
    runtime plugin declares, or :data:`skyk.serve.load.QUEUE_METRICS` (vLLM's
    and SGLang's) for a task without ``runtime:``, whose engine is whatever
    its ``run`` starts.

    :param task: a Task, or a task mapping as a service record stores it.
    :raises SpecError: when the task names a runtime that is not installed.
    """
    if isinstance(task, Mapping):
        from skyk.spec.task import task_from_mapping

        task = task_from_mapping(dict(task), "<service task>")
    if task.runtime is None:
        from skyk.serve.load import QUEUE_METRICS

        return QUEUE_METRICS
    return tuple(load_runtime(task.runtime.engine, task.source).queue_metrics)

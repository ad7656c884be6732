"""The interface an inference runtime plugin (vLLM, SGLang, ...) implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class RuntimeRecipe:
    """What a recipe asks of a runtime: the model and how to serve it."""

    model: str
    port: int = 8000
    engine_args: dict[str, str | int | float | bool] = field(default_factory=dict)


class Runtime(abc.ABC):
    """An inference engine skyk can serve a model with.

    A runtime turns a recipe into shell commands; tensor parallelism comes
    from ``$SKYK_NUM_GPUS_PER_NODE`` at run time, so the same command fits
    whatever accelerator count the optimizer picked.
    """

    name: ClassVar[str]
    #: HTTP path that answers 200 once the engine can serve requests.
    readiness_path: ClassVar[str]
    #: Prometheus metric on the engine's ``/metrics`` that counts queued requests.
    queue_length_metric: ClassVar[str]

    @abc.abstractmethod
    def setup_command(self, recipe: RuntimeRecipe) -> str:
        """Return the shell command that installs the engine on a node."""

    @abc.abstractmethod
    def serve_command(self, recipe: RuntimeRecipe) -> str:
        """Return the shell command that serves ``recipe.model`` on ``recipe.port``."""


def engine_flags(engine_args: dict[str, str | int | float | bool]) -> str:
    """Render engine args as ``--flag value`` pairs (``True`` gives a bare flag)."""
    import shlex

    parts: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is not False and value is not None:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


class PythonServerRuntime(Runtime):
    """A runtime installed with pip and started as a Python module with flags.

    vLLM and SGLang both fit this shape; a subclass names the package, the
    launcher and the spelling of its model and tensor-parallel flags.
    """

    #: What ``pip install`` is given on the node.
    package_spec: ClassVar[str]
    #: The command that starts the server, e.g. ``python -m vllm.entrypoints.openai.api_server``.
    launcher: ClassVar[str]
    model_flag: ClassVar[str]
    tensor_parallel_flag: ClassVar[str]

    def setup_command(self, recipe: RuntimeRecipe) -> str:
        """Return the ``pip install`` command that puts the engine on the node."""
        import shlex

        # Quoted: extras in brackets are a glob pattern to the shell.
        return f"pip install {shlex.quote(self.package_spec)}"

    def serve_command(self, recipe: RuntimeRecipe) -> str:
        """Return the command that serves ``recipe.model`` on ``recipe.port``, all interfaces."""
        import shlex

        # The GPU count stays an unquoted expansion on purpose: it is resolved
        # on the node; the default keeps single-GPU runs working.
        command = (f"{self.launcher} {self.model_flag} {shlex.quote(recipe.model)}"
                   f" --host 0.0.0.0 --port {int(recipe.port)}"
                   f" {self.tensor_parallel_flag} ${{SKYK_NUM_GPUS_PER_NODE:-1}}")
        flags = engine_flags(recipe.engine_args)
        return f"{command} {flags}" if flags else command

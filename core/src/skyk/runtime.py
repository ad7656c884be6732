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

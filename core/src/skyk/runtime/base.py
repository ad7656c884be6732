"""The interface an inference runtime plugin (vLLM, SGLang, ...) implements."""

from __future__ import annotations

import abc
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from skyk.runtime.flags import FlagKind, render_flags

#: The tensor-parallel degree, evaluated by the node's shell when the job
#: starts: the GPUs per node the optimizer picked, at least 1 (a CPU node
#: reports 0, and an unset variable means a single device).
GPUS_PER_NODE = '"$(( ${SKYK_NUM_GPUS_PER_NODE:-1} > 1 ? ${SKYK_NUM_GPUS_PER_NODE:-1} : 1 ))"'

#: Where the engine listens: every interface of the node, so the serve
#: controller and router reach it on the node's address.
HOST = "0.0.0.0"


@dataclass(frozen=True)
class RuntimeRecipe:
    """What a task's ``runtime:`` section asks for, with the values skyk decided.

    ``engine_args`` are keyed by flag name (``max-model-len``, no dashes in
    front). ``api_key_env`` names the environment variable that holds the
    API key when the job runs; the key itself never appears here.
    """

    model: str
    port: int = 8000
    version: str | None = None
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    api_key_env: str | None = None


class Runtime(abc.ABC):
    """An inference engine skyk can serve a model with.

    A runtime turns a recipe into shell commands; tensor parallelism comes
    from ``$SKYK_NUM_GPUS_PER_NODE`` at run time, so the same command fits
    whatever accelerator count the optimizer picked.
    """

    name: ClassVar[str]
    #: The engine release ``setup`` installs when the task names none; the
    #: plugin's README lists the flags checked against it.
    default_version: ClassVar[str]
    #: HTTP path that answers 200 once the engine can serve requests.
    readiness_path: ClassVar[str]
    #: Prometheus gauges on the engine's ``/metrics`` that count queued requests.
    queue_metrics: ClassVar[tuple[str, ...]]
    #: Flags skyk sets itself -> where the user sets that instead. Giving one
    #: in ``runtime.args`` is an error, never a silent override.
    reserved_flags: ClassVar[Mapping[str, str]] = {}
    #: Flags whose values the runtime checks before anything is launched.
    known_flags: ClassVar[Mapping[str, FlagKind]] = {}

    @abc.abstractmethod
    def setup_command(self, recipe: RuntimeRecipe) -> str:
        """Return the shell command that installs the engine on a node."""

    @abc.abstractmethod
    def serve_command(self, recipe: RuntimeRecipe) -> str:
        """Return the shell command that serves ``recipe.model`` on ``recipe.port``."""

    def check_arg(self, flag: str, value: Any) -> None:
        """Raise ``ValueError("message | hint: ...")`` when ``--flag value`` cannot work.

        :param flag: the flag name without leading dashes (``max-model-len``).
        """
        if flag in self.reserved_flags:
            mine = ", ".join(f"--{f}" for f in self.reserved_flags)
            raise ValueError(f"--{flag} is one of the flags skyk sets itself ({mine})"
                             f" | hint: {self.reserved_flags[flag]}")
        kind = self.known_flags.get(flag)
        problem = kind.problem(value) if kind is not None else None
        if problem is not None:
            raise ValueError(f"--{flag} {problem}"
                             f" | hint: write e.g. {flag}: {_yaml(kind.example)}")


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class CommandLineRuntime(Runtime):
    """An engine installed with pip and started by one command with ``--flag value`` arguments.

    vLLM and SGLang both fit this shape; a subclass names the package, the
    launcher and how it spells the model, tensor-parallel and metrics flags.
    """

    #: The pip requirement name, extras included (``sglang[all]``).
    package: ClassVar[str]
    #: The words that start the server, e.g. ``("vllm", "serve")``.
    launcher: ClassVar[tuple[str, ...]]
    #: The flag before the model, or None when the model is positional.
    model_flag: ClassVar[str | None] = None
    tensor_parallel_flag: ClassVar[str]
    served_model_name_flag: ClassVar[str] = "--served-model-name"
    api_key_flag: ClassVar[str] = "--api-key"
    #: Flags always passed, e.g. what turns on ``/metrics``.
    always_flags: ClassVar[tuple[str, ...]] = ()
    #: How ``false`` is written for a boolean flag (``"no-"`` gives
    #: ``--no-flag``); None leaves the flag out (``store_true`` flags).
    false_prefix: ClassVar[str | None] = None

    def setup_command(self, recipe: RuntimeRecipe) -> str:
        """Return ``python -m pip install 'PACKAGE==VERSION'``.

        ``python -m pip`` installs into the interpreter that later runs the
        server; quoting keeps extras in brackets from being a shell glob.
        """
        version = recipe.version or self.default_version
        return f"python -m pip install {shlex.quote(f'{self.package}=={version}')}"

    def serve_command(self, recipe: RuntimeRecipe) -> str:
        """Return the launcher, the model, skyk's own flags, then the recipe's engine args."""
        model = shlex.quote(recipe.model)
        words = [*self.launcher, *((self.model_flag, model) if self.model_flag else (model,)),
                 "--host", HOST, "--port", str(int(recipe.port)),
                 self.tensor_parallel_flag, GPUS_PER_NODE]
        args = dict(recipe.engine_args)
        if "served-model-name" not in args:
            # Clients send the model as the user wrote it, whichever engine serves it.
            words += [self.served_model_name_flag, model]
        if recipe.api_key_env:
            # Expanded by the node's shell from the job's secret: the stored
            # command holds the variable's name, never the key.
            words += [self.api_key_flag, f'"${{{recipe.api_key_env}}}"']
        words += self.always_flags
        words += render_flags(args, self.false_prefix)
        return " ".join(words)

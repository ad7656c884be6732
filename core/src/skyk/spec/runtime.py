"""The ``runtime`` section: serve a model with an inference engine plugin (a skyk extension).

Only the shape is checked here; what the engine accepts (flags skyk sets
itself, typed values) is checked by the runtime plugin when the task is
resolved (:mod:`skyk.runtime.resolve`), because the spec never loads plugins.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from skyk.spec.base import SpecModel
from skyk.spec.values import check_env_name, check_path

# A flag name, once leading dashes are dropped. Flag names reach the shell
# unquoted, so nothing but letters, digits, '-' and '_' may pass.
_FLAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# A PEP 440-ish version: digits first, then the characters versions use.
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")
_SCALARS = (str, int, float, bool)


def flag_name(key: str) -> str:
    """Return the engine flag an ``args`` key stands for, without dashes: ``max_model_len`` -> ``max-model-len``."""
    return key.lstrip("-").replace("_", "-")


def _check_arg_value(key: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{key!r} has no value"
                         " | hint: write true for a flag without a value, or remove the key")
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, list):
        if not value or not all(isinstance(item, _SCALARS) for item in value):
            raise ValueError(f"{key!r} must be a list of plain values"
                             " | hint: write e.g. [a, b]; a nested structure goes in a mapping")
        return
    if isinstance(value, dict):
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key!r} holds something JSON cannot carry"
                             " | hint: use strings, numbers, true/false, lists and mappings") from None
        return
    raise ValueError(f"{key!r} has an unsupported value {value!r}"
                     " | hint: write a string, number, true/false, list or mapping")


class RuntimeSection(SpecModel):
    """``runtime:`` — the engine plugin, the model and how to serve it.

    When present, the named runtime plugin writes the ``setup``, ``run`` and
    readiness probe the task leaves out (see :mod:`skyk.runtime.resolve`).
    """

    engine: str = Field(min_length=1)
    model: str = Field(min_length=1)
    version: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    api_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # "runtime: vllm" reads naturally but leaves the model out; say how to write it.
        if isinstance(data, str):
            raise ValueError(f"runtime needs the engine and the model, not just {data!r}"
                             f" | hint: write runtime: {{engine: {data}, model: Qwen/Qwen2.5-7B-Instruct}}")
        return data

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        # Plugin names are looked up lower-case, like clouds.
        return value.strip().lower()

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model is empty | hint: write a Hugging Face id such as"
                             " Qwen/Qwen2.5-7B-Instruct, or a local path")
        # A model may be a local directory, so it must be a path this machine can hold.
        return check_path(value.strip(), "model", local=True)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 0.10 as the number 0.1: a version must be quoted text.
            raise ValueError(f"version {value!r} was read as a number"
                             " | hint: quote it, e.g. version: '0.11.0'")
        if isinstance(value, str) and not _VERSION.match(value):
            raise ValueError(f"bad version {value!r} | hint: write a release such as '0.11.0'")
        return value

    @field_validator("args", mode="before")
    @classmethod
    def _args(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports "expected a mapping"
        seen: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _FLAG.match(key.lstrip("-")):
                raise ValueError(f"bad engine argument name {key!r}"
                                 " | hint: use the flag's name, e.g. max-model-len or max_model_len")
            name = flag_name(key)
            if name in seen:
                raise ValueError(f"{key!r} and {seen[name]!r} are the same flag --{name}"
                                 " | hint: keep one of them")
            seen[name] = key
            _check_arg_value(key, item)
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: str | None) -> str | None:
        return None if value is None else check_env_name(value, "api_key secret")

    @property
    def flags(self) -> dict[str, Any]:
        """The engine arguments keyed by flag name (dashes, no leading ``--``), in order."""
        return {flag_name(key): value for key, value in self.args.items()}

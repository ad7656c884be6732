"""Fill a task's ``envs`` into the fields SkyPilot fills them into.

SkyPilot substitutes ``$VAR`` and ``${VAR}`` from ``envs`` into ``workdir``,
``file_mounts`` and ``service`` when it reads a task, so recipes such as its
Qwen services name the model once (``envs.MODEL_NAME``) and use it in the
readiness probe's ``post_data``. skyk does the same, and also in ``runtime``
(its own section), so ``--env MODEL_NAME=...`` can switch the served model.
``setup`` and ``run`` are left alone: the shell expands them on the node.

A reference to a name that is not in ``envs``, or whose value is still unset,
stays as written, as in SkyPilot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

#: ``$NAME`` or ``${NAME}``, with NAME a shell variable name.
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def fill_text(text: str, envs: Mapping[str, str | None]) -> str:
    """Return ``text`` with each ``$NAME``/``${NAME}`` whose value ``envs`` holds replaced by it."""
    def value(match: re.Match[str]) -> str:
        found = envs.get(match.group(1) or match.group(2))
        return match.group(0) if found is None else found

    return _REFERENCE.sub(value, text) if "$" in text else text


def references(text: str) -> list[str]:
    """The names ``text`` still refers to as ``$NAME``/``${NAME}`` (those no value filled)."""
    return [match.group(1) or match.group(2) for match in _REFERENCE.finditer(text)] if "$" in text else []


def fill(value: Any, envs: Mapping[str, str | None]) -> Any:
    """Return ``value`` with env references filled in every string it holds.

    Strings, mapping keys and values, list items and the fields of pydantic
    models are walked; a model is copied only when something in it changed,
    and other values come back as they are.
    """
    if isinstance(value, str):
        return fill_text(value, envs)
    if isinstance(value, dict):
        return {fill(key, envs): fill(item, envs) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, envs) for item in value]
    if isinstance(value, BaseModel):
        changed = {}
        for name in type(value).model_fields:
            current = getattr(value, name)
            filled = fill(current, envs)
            if filled != current:
                changed[name] = filled
        return value.model_copy(update=changed) if changed else value
    return value

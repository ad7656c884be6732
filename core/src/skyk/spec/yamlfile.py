"""Reading YAML files users write: clear one-line errors, no silent duplicates."""

from __future__ import annotations

import os
from typing import Any

import yaml

from skyk.errors import SpecError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader that rejects a key written twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a list or mapping cannot be a key", key_node.start_mark) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Return the mapping in the YAML file at ``path``; raise ``SpecError`` otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise SpecError(f"{what} file {path} not found", hint="check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{path} is a directory, not a {what} file",
                        hint=f"pass the {what} YAML file itself") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not UTF-8 text", hint=f"a {what} file is YAML text") from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        lines = text.splitlines()
        if mark and mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t":
            problem = "a tab character; YAML indents with spaces only"
        elif "another document" in problem:
            problem = "more than one YAML document ('---'); a task file holds one task"
        raise SpecError(f"{path}: {where}malformed YAML: {problem}",
                        hint="check indentation and that every 'key: value' has a space after ':'"
                        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {exc}".splitlines()[0]) from None
    if data is None:
        raise SpecError(f"{path} is empty", hint=f"a {what} needs at least a 'run:' command")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level, "
                        f"got {type(data).__name__}", hint="start with 'name:', 'resources:' or 'run:'")
    return data

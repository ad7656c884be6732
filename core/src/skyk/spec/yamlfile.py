"""Reading YAML files users write: clear one-line errors, no silent duplicates."""

from __future__ import annotations

import os
from typing import Any

import yaml

from skyk.errors import SpecError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: The most nodes a document may hold once its aliases are expanded. Aliases
#: let a few hundred bytes stand for billions of nodes (a "billion laughs"),
#: and every walk of the data (filling envs, validation) expands them.
MAX_NODES = 100_000
#: The most characters its strings may hold once aliases are expanded.
MAX_TEXT = 10_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class AliasError(yaml.MarkedYAMLError):
    """A recursive alias, or aliases that expand a document beyond the bounds."""


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader that rejects a key written twice in one mapping.

    Every failure while building a value (``!!float abc``, ``!!bool maybe``,
    an integer too long to convert) becomes a ``ConstructorError`` marked
    with where the value was written.
    """

    def construct_object(self, node, deep=False):  # noqa: D102 - PyYAML API
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_excerpt(node)} as {tag}: {_reason(exc)}",
                node.start_mark) from None


def _excerpt(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value if len(node.value) <= 40 else node.value[:37] + "...")
    return "this " + ("list" if isinstance(node, yaml.SequenceNode) else "mapping")


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return "not a value of that type"
    return str(exc).split(";")[0] or type(exc).__name__


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    if not isinstance(node, yaml.MappingNode):  # e.g. '!!map [1]'
        raise yaml.constructor.ConstructorError(
            None, None, f"{_excerpt(node)} is tagged !!map but is not a mapping", node.start_mark)
    # Merge keys (<<: *base) as YAML 1.1 and SkyPilot have them: keys written
    # here win over merged ones, and only keys written twice here are errors.
    merged, explicit = _split_merges(node)
    mapping: dict[Any, Any] = {}
    for pairs, strict in ((merged, False), (explicit, True)):
        written: set[Any] = set()
        for key_node, value_node in pairs:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a list or mapping cannot be a key", key_node.start_mark) from None
            if strict and key in written:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark)
            written.add(key)
            mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


Pairs = list[tuple[yaml.Node, yaml.Node]]


def _split_merges(node: yaml.MappingNode) -> tuple[Pairs, Pairs]:
    """Return (pairs merged in through ``<<``, pairs written here), each later pair winning.

    Unlike PyYAML's ``flatten_mapping`` this leaves the nodes as they are, so
    a mapping merged into several others still knows which keys it wrote.
    """
    merged: Pairs = []
    explicit: Pairs = []
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            explicit.append((key_node, value_node))
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        # In '<<: [*a, *b]' the first mapping wins, so it is applied last.
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "'<<' merges a mapping or a list of mappings", source.start_mark)
            inner_merged, inner_explicit = _split_merges(source)
            merged.extend(inner_merged + inner_explicit)
    return merged, explicit


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_size(root: yaml.Node) -> None:
    """Raise ``AliasError`` for a recursive alias or a document too large once expanded.

    Sizes are summed over the node graph once per distinct node, so the
    check itself stays as small as the text, however far aliases expand.
    """
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    # An explicit stack: a deeply nested document must not exhaust Python's.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            nodes, text = 1, 0
            for child in _children(node):
                child_nodes, child_text = sizes[id(child)]
                nodes, text = nodes + child_nodes, text + child_text
            if nodes > MAX_NODES or text > MAX_TEXT:
                raise AliasError(
                    None, None, f"the document expands to more than {MAX_NODES:,} values or"
                    f" {MAX_TEXT:,} characters through its aliases", node.start_mark)
            sizes[key] = (nodes, text)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise AliasError(None, None, "a recursive alias (a value that contains"
                                       " itself)", node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = (1, len(node.value))
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


#: The most documents ('---') one file may hold: a pipeline of that many tasks.
MAX_DOCUMENTS = 100


def parse_yaml(text: str) -> Any:
    """Parse one YAML document safely and within bounds.

    Raises ``yaml.YAMLError`` (``MarkedYAMLError`` where a place is known)
    for malformed YAML, bad tagged values, recursive aliases and documents
    that expand beyond ``MAX_NODES`` or ``MAX_TEXT``.
    """
    documents = _parse(text, many=False)
    return documents[0] if documents else None


def parse_yaml_documents(text: str) -> list[Any]:
    """Parse every YAML document of ``text`` (separated by ``---``), each within bounds."""
    return _parse(text, many=True)


def _parse(text: str, many: bool) -> list[Any]:
    loader = _StrictLoader(text)
    try:
        if not many:
            node = loader.get_single_node()
            nodes = [node] if node is not None else []
        else:
            nodes = []
            while loader.check_node():
                if len(nodes) == MAX_DOCUMENTS:
                    raise yaml.YAMLError(f"more than {MAX_DOCUMENTS} documents")
                nodes.append(loader.get_node())
        for node in nodes:
            _check_size(node)
        return [loader.construct_document(node) for node in nodes]
    except RecursionError:
        # Nesting deeper than the parser or constructor can follow.
        raise yaml.YAMLError("nested too deeply") from None
    finally:
        loader.dispose()


def _hint(exc: yaml.YAMLError) -> str:
    if isinstance(exc, AliasError):
        return "write the values out instead of nesting aliases (*name) inside each other"
    if isinstance(exc, yaml.constructor.ConstructorError):
        return "quote a value to keep it as text, or drop its !!tag"
    if "nested too deeply" in str(exc):
        return "flatten the nesting"
    return "check indentation and that every 'key: value' has a space after ':'"


def load_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Return the mapping in the YAML file at ``path``; raise ``SpecError`` otherwise."""
    [data] = _load(path, what, many=False)
    return data


def load_yaml_mappings(path: str | os.PathLike[str], what: str) -> list[dict[str, Any]]:
    """Return the mapping of each document in the YAML file at ``path`` (a pipeline); ``SpecError`` otherwise."""
    return _load(path, what, many=True)


def _load(path: str | os.PathLike[str], what: str, many: bool) -> list[dict[str, Any]]:
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
        documents = _parse(text, many)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        lines = text.splitlines()
        if mark and mark.line < len(lines) and lines[mark.line][mark.column:mark.column + 1] == "\t":
            problem = "a tab character; YAML indents with spaces only"
        elif "another document" in problem:
            problem = ("more than one YAML document ('---'); a task file holds one task"
                       " (a pipeline of several runs as a managed job: skyk jobs launch)")
        raise SpecError(f"{path}: {where}malformed YAML: {problem}", hint=_hint(exc)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {exc}".splitlines()[0], hint=_hint(exc)) from None
    if not documents or all(d is None for d in documents):
        raise SpecError(f"{path} is empty", hint=f"a {what} needs at least a 'run:' command")
    for index, data in enumerate(documents):
        if not isinstance(data, dict):
            where = f" (document {index + 1})" if many and len(documents) > 1 else ""
            raise SpecError(f"{path}{where}: expected a mapping of fields at the top level, "
                            f"got {type(data).__name__}", hint="start with 'name:', 'resources:' or 'run:'")
    return documents

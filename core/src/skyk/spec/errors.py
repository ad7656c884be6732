"""Turn pydantic validation errors into one-line ``SpecError`` messages."""

from __future__ import annotations

from pydantic import ValidationError

from skyk.errors import SpecError

_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
    "literal_error": None,
    "missing": "is required",
}


#: A fix to suggest for each kind of pydantic error, when the check gave none.
_HINTS = {
    "int_type": "write a whole number without quotes, e.g. 2",
    "int_parsing": "write a whole number without quotes, e.g. 2",
    "int_from_float": "write a whole number, e.g. 2",
    "float_type": "write a number without quotes, e.g. 1.5",
    "float_parsing": "write a number without quotes, e.g. 1.5",
    "bool_type": "write true or false, without quotes",
    "bool_parsing": "write true or false, without quotes",
    "string_type": "write text; quote it if YAML reads it as something else, and use '|' for"
                   " several lines",
    "dict_type": "indent the fields under this key, one 'name: value' per line",
    "model_type": "indent the fields under this key, one 'name: value' per line",
    "model_attributes_type": "indent the fields under this key, one 'name: value' per line",
    "list_type": "write a list, e.g. [a, b] or one '- item' per line",
    "literal_error": "use one of the values listed",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
    "missing": "add the field",
}


def field_path(loc: tuple) -> str:
    """Render a pydantic location as ``resources.any_of[1].cpus``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out or "(top level)"


def _got(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def spec_error(source: str, exc: ValidationError) -> SpecError:
    """Return a ``SpecError`` naming ``source``, the field path and what was expected.

    Only the first problem is reported: one clear line beats a wall of them.
    """
    err = exc.errors(include_url=False)[0]
    # Union members each report a failure; the deepest path is the real one.
    loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "unknown_field":
        path = field_path(loc + (ctx["field"],))
        return SpecError(f"{source}: {path}: unknown field", hint=ctx["hint"])
    path = field_path(loc)
    if kind == "missing":
        return SpecError(f"{source}: {path}: is required", hint=f"add {loc[-1]}: ...")
    if kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
        text, _, hint = message.partition(" | hint: ")
        return SpecError(f"{source}: {path}: {text}", hint=hint or "fix the value as the message says")
    expected = _EXPECTED.get(kind) or err["msg"][0].lower() + err["msg"][1:]
    return SpecError(f"{source}: {path}: {expected}, got {_got(err.get('input'))}",
                     hint=_HINTS.get(kind, "see the task YAML reference in the README"))


#: the tags skyk gives the members of its discriminated unions
UNION_TAGS = frozenset({"mount-path", "storage-object"})


def _is_union_tag(part: object) -> bool:
    # pydantic inserts a union member's type into the location, e.g.
    # ('readiness_probe', 'str'); such tags say nothing to a user. Fields
    # with several accepted shapes are typed loosely and parsed by our own
    # validators, so only these plain tags can appear, and the tags of
    # discriminated unions (skyk.spec.storage.MountSource).
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "list", "dict", "none"} | UNION_TAGS
        or part.startswith(("list[", "dict[", "function-", "constrained-", "lax-", "strict-"))
    )

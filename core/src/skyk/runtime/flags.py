"""Engine flags: the value kinds a runtime can check, and how values become shell words.

A runtime declares the flags it knows the type of (``Integer``, ``Fraction``,
``Choice``...); a value of the wrong kind is caught when the task is loaded,
not minutes later when the engine starts on a GPU someone is paying for.
Flags a runtime does not declare pass through unchecked.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

_INTEGER = re.compile(r"^\s*-?\d+\s*$")
# vLLM reads token counts such as 32k or 1.5M (decimal) and 32K (binary).
_TOKENS = re.compile(r"^\s*\d+(\.\d+)?\s*[kKmMgG]?\s*$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class FlagKind:
    """What values one engine flag takes; subclasses say what and how to check it."""

    #: Shown to the user: "expects {expects}".
    expects: ClassVar[str] = "a value"
    #: A value that passes, for hints and contract tests.
    example: ClassVar[Any] = None
    #: A value that fails, for contract tests.
    bad_example: ClassVar[Any] = None

    def problem(self, value: Any) -> str | None:
        """Return what is wrong with ``value``, or None when the engine will accept it."""
        return None

    def _wrong(self, value: Any) -> str:
        return f"expects {self.describe()}, got {value!r}"

    def describe(self) -> str:
        """Return what the flag expects, for messages (``a whole number >= 1``)."""
        return self.expects


@dataclass(frozen=True)
class Integer(FlagKind):
    """A whole number, at least ``minimum`` (None: any)."""

    minimum: int | None = 1
    example: ClassVar[Any] = 8
    bad_example: ClassVar[Any] = "many"

    def describe(self) -> str:
        """``a whole number``, with its lower bound."""
        return "a whole number" if self.minimum is None else f"a whole number >= {self.minimum}"

    def problem(self, value: Any) -> str | None:
        """Reject booleans, fractions and words; accept ``8`` and ``"8"``."""
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and _INTEGER.match(value))):
            return self._wrong(value)
        if self.minimum is not None and int(value) < self.minimum:
            return self._wrong(value)
        return None


@dataclass(frozen=True)
class TokenCount(FlagKind):
    """A token count: a whole number, or a size such as ``32k`` (vLLM's human-readable form)."""

    expects: ClassVar[str] = "a token count such as 4096 or 32k"
    example: ClassVar[Any] = 4096
    bad_example: ClassVar[Any] = "long"

    def problem(self, value: Any) -> str | None:
        """Accept positive integers and ``NNk``/``NNM`` strings."""
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return None
        if isinstance(value, str) and _TOKENS.match(value) and float(re.sub(r"[^\d.]", "", value)) > 0:
            return None
        return self._wrong(value)


@dataclass(frozen=True)
class Fraction(FlagKind):
    """A share of memory: a number above 0 and at most 1."""

    expects: ClassVar[str] = "a fraction above 0 and at most 1"
    example: ClassVar[Any] = 0.85
    bad_example: ClassVar[Any] = 1.5

    def problem(self, value: Any) -> str | None:
        """Reject words, booleans and numbers outside the range."""
        number = None if isinstance(value, bool) else _as_float(value)
        return None if number is not None and 0 < number <= 1 else self._wrong(value)


@dataclass(frozen=True)
class Number(FlagKind):
    """Any number at least ``minimum``."""

    minimum: float = 0.0
    example: ClassVar[Any] = 4
    bad_example: ClassVar[Any] = "lots"

    def describe(self) -> str:
        """``a number >= minimum``."""
        return f"a number >= {self.minimum:g}"

    def problem(self, value: Any) -> str | None:
        """Reject words, booleans and numbers below the minimum."""
        number = None if isinstance(value, bool) else _as_float(value)
        return None if number is not None and number >= self.minimum else self._wrong(value)


@dataclass(frozen=True)
class Boolean(FlagKind):
    """An on/off switch, written ``true`` or ``false``."""

    expects: ClassVar[str] = "true or false"
    example: ClassVar[Any] = True
    bad_example: ClassVar[Any] = "yes"

    def problem(self, value: Any) -> str | None:
        """Accept only YAML booleans: ``"yes"`` in quotes is text, not a switch."""
        return None if isinstance(value, bool) else self._wrong(value)


@dataclass(frozen=True)
class Choice(FlagKind):
    """One of a fixed set of words."""

    options: tuple[str, ...] = ()
    bad_example: ClassVar[Any] = "not-an-option"

    def describe(self) -> str:
        """``one of a, b, c``."""
        return "one of " + ", ".join(self.options)

    @property
    def example(self) -> Any:  # type: ignore[override]
        """The first option."""
        return self.options[0]

    def problem(self, value: Any) -> str | None:
        """Reject anything outside ``options``."""
        return None if value in self.options else self._wrong(value)


@dataclass(frozen=True)
class Text(FlagKind):
    """A single string (a flag that takes one value, not a list)."""

    expects: ClassVar[str] = "one string"
    example: ClassVar[Any] = "my-model"
    bad_example: ClassVar[Any] = ["a", "b"]

    def problem(self, value: Any) -> str | None:
        """Reject lists, mappings and booleans."""
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return None if ok else self._wrong(value)


def render_flags(flags: Mapping[str, Any], false_prefix: str | None = None) -> list[str]:
    """Render ``{flag: value}`` as shell words, each value quoted.

    ``True`` gives a bare ``--flag``; ``False`` gives ``--<false_prefix>flag``
    (vLLM's ``--no-``) or nothing when the engine has no negative form; a
    list gives one word per item after the flag (argparse ``nargs``); a
    mapping gives one JSON word, which both engines parse for config flags.
    """
    words: list[str] = []
    for name, value in flags.items():
        flag = f"--{name}"
        if value is True:
            words.append(flag)
        elif value is False:
            if false_prefix is not None:
                words.append(f"--{false_prefix}{name}")
        elif isinstance(value, list):
            words.append(flag)
            words.extend(shlex.quote(_text(item)) for item in value)
        elif isinstance(value, dict):
            words += [flag, shlex.quote(json.dumps(value, separators=(",", ":")))]
        else:
            words += [flag, shlex.quote(_text(value))]
    return words


def _text(value: Any) -> str:
    # YAML true inside a list must reach the engine as the engine spells it.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

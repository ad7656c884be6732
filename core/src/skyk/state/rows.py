"""Reading rows that may be damaged: each value checked against what the schema promises.

SQLite stores whatever it is given (a column declared REAL happily holds
``'abc'``), and anyone can edit the file. A row that does not hold what skyk
wrote is reported as damaged, with the reason, instead of failing every
command that lists the table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Longest piece of a bad value quoted in a reason.
_QUOTE = 40


class DamagedRow(Exception):
    """A row holds a value skyk never writes there; the message says which and why."""


def value(row: sqlite3.Row, column: str, *kinds: type, optional: bool = False):
    """Return ``row[column]`` if it is one of ``kinds`` (or NULL, when ``optional``)."""
    found = row[column]
    if found is None and optional:
        return None
    # bool is an int to Python, but SQLite never returns one.
    if not isinstance(found, kinds):
        wanted = " or ".join(k.__name__ for k in kinds) + (" or NULL" if optional else "")
        raise DamagedRow(f"{column} is {_quote(found)}, not {wanted}")
    return found


def decoded(row: sqlite3.Row, column: str, decode: Callable[[str], T], optional: bool = False) -> T | None:
    """Return ``decode(row[column])`` for a JSON column; a value it rejects is damage."""
    text = value(row, column, str, optional=optional)
    if text is None:
        return None
    try:
        return decode(text)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise DamagedRow(f"{column} cannot be read ({' '.join(str(exc).split())[:_QUOTE * 2]})") from None


def _quote(found) -> str:
    text = repr(found)
    return text if len(text) <= _QUOTE else text[:_QUOTE] + "..."

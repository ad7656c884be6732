"""Tables for people, JSON for programs (``-o json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def add_output_flag(parser) -> None:
    """Give a command that prints a table the ``-o/--output {table,json}`` flag."""
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="print a table (default) or JSON")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Return the lines of ``rows`` under ``headers`` in aligned columns (None shows as ``-``)."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], file=None) -> None:
    """Print ``rows`` under ``headers`` in aligned columns."""
    for line in format_table(headers, rows):
        print(line, file=file or sys.stdout)


def print_error(exc) -> None:
    """Print a ``SkykError`` as the one line (with its hint) that the CLI shows for every error,
    under the error's table, if it has one."""
    if exc.table is not None:
        print_table(*exc.table, file=sys.stderr)
    print(f"skyk: error: {exc.one_line()}", file=sys.stderr)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def money(value: float | None) -> str:
    """Format a USD/hour amount for a table."""
    return "-" if value is None else f"{value:.2f}"


def warn_plugin_failures(kernel) -> None:
    """Tell the user, on stderr, about plugins that failed to load; the rest keep working."""
    for failure in kernel.failures:
        print(f"skyk: warning: {failure.kind} plugin '{failure.name}' ({failure.distribution}"
              f" {failure.version}) failed to load: {failure.error}", file=sys.stderr)

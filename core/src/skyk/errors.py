"""Errors a user can cause: each carries a one-line message and a hint.

The CLI prints them as a single line and exits non-zero, without a traceback.
"""

from __future__ import annotations

#: The most characters of a message (and, apart, of its hint) an error line shows.
LINE_LIMIT = 800


def printable(text: str, limit: int = LINE_LIMIT) -> str:
    """Return ``text`` as one safe, bounded line for a terminal.

    Runs of whitespace become one space; other control characters (escape
    sequences, NUL) are shown escaped, as ``\\x1b``, so nothing a user typed
    can drive the terminal; and a text longer than ``limit`` keeps its start
    and end around a note of how much was left out, since user values such
    as a 1 MB region name are echoed in messages.
    """
    text = " ".join(text.split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    if len(text) > limit:
        head, tail = limit * 3 // 4, limit // 4
        text = f"{text[:head]}...({len(text) - head - tail} characters left out)...{text[-tail:]}"
    return text


class SkykError(Exception):
    """An error caused by input or environment the user controls."""

    exit_code = 2
    #: a table (headers, rows) the CLI prints above the error line, for errors that sum up
    #: many steps (every place a launch tried); the line itself stays complete without it
    table: tuple[tuple[str, ...], list[tuple[str, ...]]] | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Return the message and hint as one line, ready to print."""
        text = printable(self.message)
        if self.hint:
            text += f" (hint: {printable(self.hint)})"
        return text


class SpecError(SkykError):
    """A task YAML or command-line override is malformed or invalid."""


class CatalogError(SkykError):
    """A price catalog is missing, unreadable or malformed."""


class PluginError(SkykError):
    """Plugins conflict or a requested plugin is not available."""


class NoFeasibleResources(SkykError):
    """No offering in any enabled cloud satisfies the request."""

    exit_code = 3


def not_found(kind: str, name: str, known: list[str], hint: str) -> SkykError:
    """Return the error for an unknown ``kind`` called ``name``, suggesting a close known one."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return SkykError(f"{kind} {name} does not exist" + (f"; did you mean {close[0]}?" if close else ""),
                     hint=hint)

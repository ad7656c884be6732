"""Errors a user can cause: each carries a one-line message and a hint.

The CLI prints them as a single line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class SkykError(Exception):
    """An error caused by input or environment the user controls."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Return the message and hint as one line, ready to print."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
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

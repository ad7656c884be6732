"""Reading skyk's tuning variables from the environment."""

from __future__ import annotations

import os

from skyk.errors import SkykError


def seconds(name: str, default: float) -> float:
    """Return env var ``name`` as a non-negative number of seconds (``default`` when unset).

    :raise SkykError: one line naming the variable when it is not a number.
    """
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        raise SkykError(f"{name} must be a number of seconds, got {os.environ[name]!r}",
                        hint=f"unset {name} to use {default:g}") from None

"""Reading skyk's tuning variables from the environment."""

from __future__ import annotations

import math
import os

from skyk.errors import SkykError

#: The longest any tuning variable may say: a day (longer is a typo, or inf, and
#: would overflow the timers and back-offs that add it up).
MAX_SECONDS = 86400.0


def seconds(name: str, default: float) -> float:
    """Return env var ``name`` as a number of seconds in [0, :data:`MAX_SECONDS`] (``default`` when unset).

    :raise SkykError: one line naming the variable when it is not a finite number in that range.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= MAX_SECONDS:  # also false for nan
        raise SkykError(f"{name} must be a number of seconds from 0 to {MAX_SECONDS:g}, got {raw!r}",
                        hint=f"unset {name} to use {default:g}")
    return value

"""argparse types for the numbers users type: finite, bounded, refused in one line.

argparse reports a type's ``ArgumentTypeError`` as ``argument FLAG: MESSAGE``,
so each message says what was expected and what was given.
"""

from __future__ import annotations

import argparse

#: The largest integer SQLite stores (8 bytes, signed): no job can have a larger id.
MAX_ID = 2**63 - 1


def job_id(text: str) -> int:
    """A job id: a whole number from 1 to ``MAX_ID``."""
    # ASCII digits only: int() takes '٣' and would refuse a 5000-digit string with its own error.
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19 or not 1 <= int(digits) <= MAX_ID:
        raise argparse.ArgumentTypeError(
            f"a job id is a whole number from 1 to {MAX_ID}, got {text[:40]!r}")
    return int(digits)


def idle_minutes(text: str) -> float:
    """Idle minutes for autostop: a finite number from 0 to the spec's ``MAX_MINUTES``."""
    from skyk.spec.values import check_minutes

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text[:40]!r}") from None
    try:
        return check_minutes(value, "idle minutes")
    except ValueError as exc:
        message, _, hint = str(exc).partition(" | hint: ")
        raise argparse.ArgumentTypeError(f"{message} ({hint})" if hint else message) from None

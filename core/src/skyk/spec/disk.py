"""Disk sizes as SkyPilot's schema takes them: GB as a whole number, or with a unit.

``256`` and ``256GB`` are 256 GB; ``1TB`` is 1024 GB; ``2048MB`` is 2 GB. As in
SkyPilot, every unit counts in powers of 1024 (KB = KiB), the two-letter
forms ``Gi``/``Ti``... mean the same, and a size is floored to whole GB.
"""

from __future__ import annotations

import re
from typing import Any

from skyk.spec.values import bounded_number

#: GB per unit (SkyPilot's units: KB..PB and Ki..Pi, all powers of 1024).
_UNIT_GB = {"k": 2 ** -20, "m": 2 ** -10, "g": 1, "t": 2 ** 10, "p": 2 ** 20}
_SIZE = re.compile(r"^([0-9]+)(?:([kmgtp])([bi]))?$", re.IGNORECASE)
#: The largest disk a task may ask for, in GB (a petabyte).
MAX_DISK_GB = 2 ** 20
_HINT = "write GB as a number (256) or with a unit: 256GB, 1TB, 512Gi"


def parse_disk_size(value: Any, what: str = "disk_size") -> int | None:
    """Return ``value`` in whole GB (None stays None); raise ValueError with a hint."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} must be a whole number of GB or a size like 256GB, got {value!r}"
                         f" | hint: {_HINT}")
    if isinstance(value, int):
        gb = value
    else:
        match = _SIZE.match(value.strip())
        if not match or len(match.group(1)) > 20:
            raise ValueError(f"bad {what} {value[:40]!r} | hint: {_HINT}")
        gb = int(int(match.group(1)) * _UNIT_GB[(match.group(2) or "g").lower()])
    bounded_number(gb, what, MAX_DISK_GB, _HINT)
    if gb < 1:
        raise ValueError(f"{what} must be at least 1 GB, got {value!r} | hint: {_HINT}")
    return gb

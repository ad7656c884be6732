"""The unit the optimizer ranks: one instance type at one place and price."""

from __future__ import annotations

from typing import NamedTuple


class Offering(NamedTuple):
    """An instance type a cloud sells in one region (and zone), with prices.

    A NamedTuple rather than a frozen dataclass: catalogs build ~100k of these
    per dry run, and a tuple is built several times faster.

    ``price`` is the on-demand USD/hour and ``spot_price`` the spot one; either
    is ``None`` where the catalog has no quote, which makes the offering
    infeasible for that purchase option. ``zone`` is ``None`` for clouds that
    price per region only.
    """

    cloud: str
    instance_type: str
    vcpus: float
    memory_gib: float
    region: str
    zone: str | None
    price: float | None
    spot_price: float | None
    accelerator: str | None = None
    accelerator_count: float = 0.0

    def hourly_price(self, use_spot: bool) -> float | None:
        """Return the USD/hour for the purchase option, or None if not sold so."""
        return self.spot_price if use_spot else self.price

    @property
    def infra(self) -> str:
        """Return ``cloud/region[/zone]``, the form users write in ``infra:``."""
        parts = [self.cloud, self.region] + ([self.zone] if self.zone else [])
        return "/".join(parts)

    @property
    def accelerators_label(self) -> str:
        """Return ``NAME:COUNT`` (or ``-``) for tables."""
        if not self.accelerator:
            return "-"
        return f"{self.accelerator}:{format_count(self.accelerator_count)}"


def format_count(count: float) -> str:
    """Format an accelerator or CPU count without a needless ``.0``."""
    return str(int(count)) if float(count).is_integer() else f"{count:g}"

"""Independent reading of the real catalogs, so tests check skyk against the CSVs.

Deliberately written apart from the plugins' readers (plain csv.DictReader,
no shared code), so a bug in a reader cannot hide itself in its own test.
"""

from __future__ import annotations

import csv
from pathlib import Path


def rows(path: Path) -> list[dict[str, str]]:
    """Every row of a catalog CSV as a dict keyed by header."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def cheapest_whole_rows(path: Path, accelerator: str, count: float, spot: bool) -> float:
    """Cheapest price of rows that carry ``accelerator:count`` themselves (AWS, Azure)."""
    column = "SpotPrice" if spot else "Price"
    prices = [float(r[column]) for r in rows(path)
              if r["AcceleratorName"] == accelerator and r["AcceleratorCount"]
              and float(r["AcceleratorCount"]) == count and r[column]]
    return min(prices)


def cheapest_gcp_fixed(path: Path, host: str, accelerator: str, count: int, spot: bool) -> float:
    """Cheapest GCP host + accelerator price in one zone, for a fixed-GPU machine type."""
    column = "SpotPrice" if spot else "Price"
    table = rows(path)
    hosts = {r["AvailabilityZone"]: float(r[column]) for r in table
             if r["InstanceType"] == host and r[column]}
    gpus = {r["AvailabilityZone"]: float(r[column]) for r in table
            if not r["InstanceType"] and r["AcceleratorName"] == accelerator
            and int(r["AcceleratorCount"]) == count and r[column]}
    return min(hosts[z] + gpus[z] for z in hosts.keys() & gpus.keys())

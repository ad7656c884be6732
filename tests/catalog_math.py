"""Independent reading of the real catalogs, so tests check skyk against the CSVs.

Deliberately written apart from the plugins' readers (plain csv.DictReader,
no shared code), so a bug in a reader cannot hide itself in its own test.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path


@functools.cache  # several helpers read the same big files; callers only read the rows
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


def gpu_memory_mib(paths: list[Path]) -> dict[str, int]:
    """Memory per GPU that the catalogs' ``GpuInfo`` states, by accelerator name.

    Where catalogs disagree (AWS says 22888 MiB for an L4, GCP 24576), the smaller.
    Azure's ``GpuInfo`` holds only the name, so it adds nothing.
    """
    found: dict[str, int] = {}
    for path in paths:
        for r in rows(path):
            match = re.search(r"'SizeInMiB': (\d+)", r["GpuInfo"])
            if r["AcceleratorName"] and match:
                name, mib = r["AcceleratorName"], int(match.group(1))
                found[name] = min(found.get(name, mib), mib)
    return found


def cheapest_rows(path: Path, accelerator: str, count: float, spot: bool) -> float | None:
    """Like ``cheapest_whole_rows``, but None when no row carries ``accelerator:count``."""
    try:
        return cheapest_whole_rows(path, accelerator, count, spot)
    except ValueError:  # min() of nothing
        return None


def cheapest_gcp_hosts(path: Path, hosts: list[str], accelerator: str, count: int,
                       spot: bool) -> float | None:
    """Cheapest of several fixed-GPU GCP machine types (see ``cheapest_gcp_fixed``), or None."""
    prices = []
    for host in hosts:
        try:
            prices.append(cheapest_gcp_fixed(path, host, accelerator, count, spot))
        except (ValueError, KeyError):  # no such host, or never in a zone with the GPU
            continue
    return min(prices) if prices else None

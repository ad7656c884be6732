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


#: GCP machine types that carry their GPUs (Google's A2/A3/A4/G2 families), by (GPU, count).
GCP_HOSTS = {
    ("A100", 8): ["a2-highgpu-8g"], ("A100", 4): ["a2-highgpu-4g"],
    ("A100-80GB", 8): ["a2-ultragpu-8g"], ("A100-80GB", 4): ["a2-ultragpu-4g"],
    ("A100-80GB", 2): ["a2-ultragpu-2g"],
    ("H100", 8): ["a3-highgpu-8g", "a3-edgegpu-8g", "a3-edgegpu-8g-nolssd"],
    ("H100", 4): ["a3-highgpu-4g"], ("H100", 2): ["a3-highgpu-2g"],
    ("H100-MEGA", 8): ["a3-megagpu-8g"], ("H200", 8): ["a3-ultragpu-8g", "a3-ultragpu-8g-nolssd"],
    ("B200", 8): ["a4-highgpu-8g"], ("L4", 8): ["g2-standard-96"], ("L4", 4): ["g2-standard-48"],
    ("L4", 2): ["g2-standard-24"], ("L4", 1): ["g2-standard-4", "g2-standard-8", "g2-standard-12",
                                              "g2-standard-16", "g2-standard-32"],
}
#: GPUs GCP attaches to N1 machines (priced as host + GPUs, which GCP_HOSTS does not model).
N1_GPUS = {"T4", "V100", "P4", "P100"}
#: AWS Neuron chips: their GpuInfo states memory, but they are no GPUs.
NOT_GPUS = {"Inferentia2", "Trainium"}


def cheapest_set(catalogs: Path, accelerator: str, count: int, spot: bool) -> float | None:
    """Cheapest price of ``accelerator:count`` on AWS, Azure or a GCP_HOSTS machine; None if none."""
    quotes = [cheapest_rows(catalogs / "aws" / "vms.csv", accelerator, count, spot),
              cheapest_rows(catalogs / "azure" / "vms.csv", accelerator, count, spot),
              cheapest_gcp_hosts(catalogs / "gcp" / "vms.csv",
                                 GCP_HOSTS.get((accelerator, count), []), accelerator, count, spot)]
    quotes = [quote for quote in quotes if quote is not None]
    return min(quotes) if quotes else None


def sets_that_hold(catalogs: Path, needed_gib: float) -> list[tuple[str, int]]:
    """Every (GPU, 1/2/4/8) whose 90% of stated memory holds ``needed_gib``."""
    memory = gpu_memory_mib([catalogs / "aws" / "vms.csv", catalogs / "gcp" / "vms.csv"])
    return [(name, count) for name, mib in memory.items() if name not in NOT_GPUS
            for count in (1, 2, 4, 8) if count * mib / 1024 * 0.9 >= needed_gib]


def cheapest_that_holds(catalogs: Path, needed_gib: float, spot: bool) -> tuple[float, set]:
    """The cheapest price of a set that holds ``needed_gib``, and the sets at that price.

    Only for models too big for N1 GPUs (asserted), whose host + GPU prices this module skips.
    """
    holding = sets_that_hold(catalogs, needed_gib)
    assert not {name for name, _ in holding} & N1_GPUS
    prices = {key: price for key in holding
              if (price := cheapest_set(catalogs, *key, spot)) is not None}
    best = min(prices.values())
    return best, {key for key, price in prices.items() if abs(price - best) < 1e-9}

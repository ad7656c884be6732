"""GCP's catalog: GPUs are priced apart from the VM that hosts them.

Rows with an empty ``InstanceType`` price accelerators alone; the cost of a
GPU machine is its host VM row plus the accelerator row in the same zone.
Some families carry a fixed GPU (a2, a3, a4, g2); T4, V100, P100 and P4
attach to N1 machines, within a vCPU limit per GPU count.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from pathlib import Path

from skyk.catalog.csvfile import price, read_rows
from skyk.catalog.offering import Offering

NAME = "gcp"

_COLUMNS = ("InstanceType", "vCPUs", "MemoryGiB", "AcceleratorName", "AcceleratorCount",
            "Region", "AvailabilityZone", "Price", "SpotPrice")

# Families whose machine type fixes the GPU: prefix -> accelerator. The count
# is the machine type's "-<N>g" suffix.
_FIXED_GPU_FAMILIES = (
    ("a2-highgpu-", "A100"),
    ("a2-megagpu-", "A100"),
    ("a2-ultragpu-", "A100-80GB"),
    ("a3-highgpu-", "H100"),
    ("a3-edgegpu-", "H100"),
    ("a3-megagpu-", "H100-MEGA"),
    ("a3-ultragpu-", "H200"),
    ("a4-highgpu-", "B200"),
)
_GPU_SUFFIX = re.compile(r"-(\d+)g(?:-|$)")

# G2 sizes -> L4 count (Google's published G2 shapes).
_G2_L4 = {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
          "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8}

# GPUs that attach to N1 machines: GPU -> {count: max vCPUs of the host}.
_N1_GPU_MAX_VCPUS = {
    "T4": {1: 48, 2: 48, 4: 96},
    "P4": {1: 24, 2: 48, 4: 96},
    "V100": {1: 12, 2: 24, 4: 48, 8: 96},
    "P100": {1: 16, 2: 32, 4: 96},
}
_N1_HOSTS = ("n1-standard-", "n1-highmem-", "n1-highcpu-")

#: TPU slices are priced whole and run as TPU VMs.
TPU_INSTANCE = "TPU-VM"


@functools.cache  # a few hundred machine types, ~30k rows
def fixed_gpu(instance_type: str) -> tuple[str, int] | None:
    """Return the (accelerator, count) a GCP machine type always carries, if any."""
    if instance_type in _G2_L4:
        return "L4", _G2_L4[instance_type]
    for prefix, accelerator in _FIXED_GPU_FAMILIES:
        if instance_type.startswith(prefix):
            match = _GPU_SUFFIX.search(instance_type)
            return (accelerator, int(match.group(1))) if match else None
    return None


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def read_catalog(path: Path) -> list[Offering]:
    """Read GCP's ``vms.csv`` into offerings, joining hosts and accelerators per zone."""
    hosts = []  # (instance, vcpus, memory, region, zone, price, spot)
    accelerators: dict[tuple[str, str, int], tuple[float | None, float | None]] = {}
    for instance, vcpus, memory, accelerator, count, region, zone, on_demand, spot in read_rows(
            path, _COLUMNS):
        if instance:
            hosts.append((instance, float(vcpus or 0), float(memory or 0), region, zone,
                          price(on_demand), price(spot)))
        elif accelerator:
            accelerators[(zone, accelerator, int(float(count)))] = (price(on_demand), price(spot))

    offerings: list[Offering] = []
    n1_by_zone: dict[str, list[tuple]] = defaultdict(list)
    for host in hosts:
        instance, vcpus, memory, region, zone, on_demand, spot = host
        gpu = fixed_gpu(instance)
        if gpu is not None:
            acc_price = accelerators.get((zone, gpu[0], gpu[1]))
            if acc_price is not None:
                offerings.append(Offering(NAME, instance, vcpus, memory, region, zone,
                                          _add(on_demand, acc_price[0]), _add(spot, acc_price[1]),
                                          gpu[0], float(gpu[1])))
            continue
        if instance.endswith("-tpu"):
            continue  # hosts of legacy TPU nodes, not sold as plain VMs
        offerings.append(Offering(NAME, instance, vcpus, memory, region, zone, on_demand, spot))
        if instance.startswith(_N1_HOSTS):
            n1_by_zone[zone].append(host)

    for (zone, accelerator, count), (acc_on_demand, acc_spot) in accelerators.items():
        if accelerator.startswith("tpu-"):
            region = zone.rsplit("-", 1)[0]
            offerings.append(Offering(NAME, TPU_INSTANCE, 0.0, 0.0, region, zone, acc_on_demand,
                                      acc_spot, accelerator, float(count)))
            continue
        max_vcpus = _N1_GPU_MAX_VCPUS.get(accelerator, {}).get(count)
        if max_vcpus is None:
            continue  # priced for a fixed-GPU family, joined above
        for instance, vcpus, memory, region, _, on_demand, spot in n1_by_zone.get(zone, ()):
            if vcpus <= max_vcpus:
                offerings.append(Offering(NAME, instance, vcpus, memory, region, zone,
                                          _add(on_demand, acc_on_demand), _add(spot, acc_spot),
                                          accelerator, float(count)))
    return offerings

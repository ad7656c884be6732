"""The built-in ``local`` cloud: this machine, free, always available.

Its single offering is the machine itself: its CPUs, memory and any NVIDIA
GPUs ``nvidia-smi`` reports. Like SkyPilot's Kubernetes cloud it costs
nothing, so it wins whenever it can run the task.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from skyk.catalog.offering import Offering
from skyk.hookspecs import hookimpl
from skyk.provision.cloud import Cloud, CredentialCheck

NAME = "local"

# nvidia-smi product names -> catalog accelerator names; first match wins,
# so the more specific patterns come first.
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"A100.*80", "A100-80GB"),
    (r"A100", "A100"),
    (r"H100", "H100"),
    (r"H200", "H200"),
    (r"B200", "B200"),
    (r"L40S", "L40S"),
    (r"A10G", "A10G"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
    (r"V100.*32", "V100-32GB"),
    (r"V100", "V100"),
    (r"\bT4\b", "T4"),
)


def gpu_name(product: str) -> str:
    """Map an ``nvidia-smi`` product name to the catalog's accelerator name."""
    for pattern, name in _GPU_PATTERNS:
        if re.search(pattern, product):
            return name
    return product.replace("NVIDIA ", "").split()[0]


def detect_gpus() -> tuple[str | None, int]:
    """Return (accelerator name, count) of this machine's NVIDIA GPUs, or (None, 0)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None, 0
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, 0
    names = [gpu_name(line.strip()) for line in out.splitlines() if line.strip()]
    if not names:
        return None, 0
    # A mixed machine is offered as its most common GPU.
    top = max(set(names), key=names.count)
    return top, names.count(top)


def memory_gib() -> float:
    """Return this machine's physical memory in GiB."""
    try:
        text = Path("/proc/meminfo").read_text()
        kib = int(re.search(r"MemTotal:\s+(\d+)", text).group(1))
        return round(kib / 1024 / 1024, 1)
    except (OSError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)


class LocalCloud(Cloud):
    """Nodes are sandboxes on this machine; no credentials needed."""

    name = NAME
    default_cpus = None
    default_memory_gib = None

    def check_credentials(self) -> CredentialCheck:
        return CredentialCheck(True, "this machine; no credentials needed")

    def offering(self) -> Offering:
        """Return this machine as an offering."""
        accelerator, count = detect_gpus()
        return Offering(cloud=NAME, instance_type="local", vcpus=float(os.cpu_count() or 1),
                        memory_gib=memory_gib(), region="local", zone=None, price=0.0,
                        spot_price=None, accelerator=accelerator, accelerator_count=float(count))


@hookimpl
def skyk_clouds():
    return [LocalCloud()]


@hookimpl
def skyk_catalog_offerings(catalog_dir):
    return [LocalCloud().offering()]

"""Memory of the GPUs an inference engine can serve a model on, by catalog name.

The optimizer's offerings carry an accelerator name and count but not its
memory: only AWS and GCP catalogs describe it (in free-form ``GpuInfo``),
Azure's does not, and reading it would slow every catalog load. So the
memory lives here, in one table keyed by the catalogs' accelerator names.

Values are MiB as the AWS and GCP catalogs' ``GpuInfo`` report them (the
smaller where the two differ: AWS reports what the driver leaves usable,
e.g. 22888 MiB for a "24 GB" L4), else the vendor's datasheet.
``tests/test_model_size.py`` checks the table against the real catalogs.

Left out on purpose, so a model is never sized onto hardware the runtimes'
``pip install`` cannot use: GPUs older than compute capability 7.0 (K80,
M60, P4, P100), AMD GPUs (MI25, MI300X: they need ROCm builds), TPUs and
AWS Neuron chips (Inferentia2, Trainium: they need Neuron builds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    """What sizing needs to know about one GPU model."""

    memory_mib: int
    #: Whether it computes in bfloat16 (compute capability 8.0+); engines
    #: refuse ``dtype: bfloat16`` on older GPUs.
    bfloat16: bool = True

    @property
    def memory_gib(self) -> float:
        """Memory per GPU in GiB."""
        return self.memory_mib / 1024


GPUS: dict[str, GpuSpec] = {
    "T4": GpuSpec(16384, bfloat16=False),
    "V100": GpuSpec(16384, bfloat16=False),
    "V100-32GB": GpuSpec(32768, bfloat16=False),
    # Azure's A10 is the same 24 GB GDDR6 board as AWS's A10G.
    "A10": GpuSpec(22888),
    "A10G": GpuSpec(22888),
    "L4": GpuSpec(22888),
    "L40S": GpuSpec(45776),
    "A100": GpuSpec(40960),
    "A100-80GB": GpuSpec(81920),
    "H100": GpuSpec(81920),
    "H100-MEGA": GpuSpec(81920),
    "H200": GpuSpec(144384),
    "B200": GpuSpec(183359),
}


def gpu_spec(name: str) -> GpuSpec | None:
    """Return the spec of the GPU a catalog calls ``name``, or None if sizing skips it."""
    return GPUS.get(name)

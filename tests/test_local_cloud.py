"""The built-in local cloud: the machine itself, through the plugin contract."""

from __future__ import annotations

import os
import stat

from skyk.builtin.local_cloud import LocalCloud, detect_gpus, gpu_name
from skyk.testing import CloudPluginContract


class TestLocalContract(CloudPluginContract):
    cloud_name = "local"
    reads_catalog_files = False


def test_offering_is_this_machine():
    offering = LocalCloud().offering()
    assert offering.vcpus == os.cpu_count() and offering.memory_gib > 0
    assert offering.price == 0.0 and offering.spot_price is None


def test_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\necho 'NVIDIA H100 80GB HBM3'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert detect_gpus() == ("H100", 2)
    assert LocalCloud().offering().accelerators_label == "H100:2"


def test_gpu_names_map_to_catalog_names():
    assert gpu_name("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert gpu_name("NVIDIA A100-SXM4-40GB") == "A100"
    assert gpu_name("Tesla T4") == "T4"
    assert gpu_name("NVIDIA L4") == "L4"
    assert gpu_name("NVIDIA A10G") == "A10G"

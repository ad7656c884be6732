"""GCP plugin: the contract, host + accelerator joins, and credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalog_math import cheapest_gcp_fixed
from skyk.plugins.manager import Kernel
from skyk.testing import CloudPluginContract

SHARED = Path(__file__).resolve().parents[4] / "shared" / "catalogs"


class TestGCPContract(CloudPluginContract):
    cloud_name = "gcp"

    @pytest.fixture
    def catalog_dir(self) -> Path:
        return SHARED


@pytest.fixture(scope="module")
def offerings():
    found, errors = Kernel.load(("cloud",), ["gcp"]).offerings_by_cloud(SHARED)
    assert not errors
    return found["gcp"]


def _cheapest(offerings, accelerator, count, spot=False):
    priced = [o for o in offerings if o.accelerator == accelerator
              and o.accelerator_count == count and o.hourly_price(spot) is not None]
    return min(priced, key=lambda o: o.hourly_price(spot))


@pytest.mark.parametrize("host, accelerator, count", [
    ("a2-ultragpu-8g", "A100-80GB", 8),
    ("a2-highgpu-8g", "A100", 8),
    ("a3-highgpu-8g", "H100", 8),
    ("g2-standard-96", "L4", 8),
])
@pytest.mark.parametrize("spot", [False, True])
def test_fixed_gpu_machines_cost_host_plus_accelerator_in_the_same_zone(
        offerings, host, accelerator, count, spot):
    expected = cheapest_gcp_fixed(SHARED / "gcp" / "vms.csv", host,
                                                  accelerator, count, spot)
    ours = [o for o in offerings if o.instance_type == host and o.hourly_price(spot) is not None]
    assert min(o.hourly_price(spot) for o in ours) == pytest.approx(expected)
    assert all((o.accelerator, o.accelerator_count) == (accelerator, count) for o in ours)


def test_readme_spot_checks(offerings):
    # Figures from ../shared/catalogs/README.md's spot-check table.
    assert _cheapest(offerings, "A100-80GB", 8).hourly_price(False) == pytest.approx(23.5666, abs=1e-4)
    assert _cheapest(offerings, "H100", 8).hourly_price(False) == pytest.approx(43.0662, abs=1e-4)
    assert _cheapest(offerings, "L4", 8).hourly_price(False) == pytest.approx(7.9771, abs=1e-4)
    t4 = _cheapest(offerings, "T4", 1)
    assert t4.instance_type == "n1-standard-1"
    assert t4.hourly_price(False) == pytest.approx(0.3975, abs=1e-4)


def test_n1_gpus_respect_the_vcpu_limit(offerings):
    v100 = [o for o in offerings if o.accelerator == "V100" and o.accelerator_count == 1]
    assert v100 and max(o.vcpus for o in v100) <= 12


def test_gpu_hosts_are_not_sold_bare(offerings):
    bare = [o for o in offerings if o.accelerator is None
            and o.instance_type.startswith(("a2-", "a3-", "a4-", "g2-"))]
    assert bare == []
    assert not any(o.instance_type.endswith("-tpu") for o in offerings)


def test_tpus_are_whole_slices(offerings):
    tpu = [o for o in offerings if o.accelerator == "tpu-v5p-8"]
    assert tpu and all(o.instance_type == "TPU-VM" and o.accelerator_count == 1 for o in tpu)


def test_authorized_user_credentials(isolated_home, monkeypatch):
    path = isolated_home / "adc.json"
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "id",
                                "client_secret": "secret", "refresh_token": "token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    result = Kernel.load(("cloud",), ["gcp"]).clouds()["gcp"].check_credentials()
    assert result.ok and "my-project" in result.reason


def test_broken_credentials_file(isolated_home, monkeypatch):
    path = isolated_home / "adc.json"
    path.write_text("{not json")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    result = Kernel.load(("cloud",), ["gcp"]).clouds()["gcp"].check_credentials()
    assert not result.ok and result.hint

"""Azure plugin: the contract, the catalog's quirks, and credentials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from skyk.plugins.manager import Kernel
from skyk.testing import CloudPluginContract

SHARED = Path(__file__).resolve().parents[4] / "shared" / "catalogs"


class TestAzureContract(CloudPluginContract):
    cloud_name = "azure"

    @pytest.fixture
    def catalog_dir(self) -> Path:
        return SHARED


@pytest.fixture(scope="module")
def offerings():
    found, errors = Kernel.load(("cloud",), ["azure"]).offerings_by_cloud(SHARED)
    assert not errors
    return found["azure"]


def test_unquoted_generation_does_not_shift_columns(offerings):
    # Standard_B12ms rows end in an unquoted "V1,V2" and have no spot price.
    b12 = [o for o in offerings if o.instance_type == "Standard_B12ms"]
    assert b12 and all(o.vcpus == 12 and o.memory_gib == 48 and o.price == 0.634 for o in b12
                       if o.region == "australiacentral")
    assert all(o.spot_price is None for o in b12)
    assert all(o.region and not o.region.startswith("V") for o in offerings)


def test_regions_without_zones(offerings):
    assert all(o.zone is None for o in offerings)
    assert len(offerings) == 53767


def test_arm_sizes_are_not_offered(offerings):
    # The catalog's images are all x86-64: an Arm size (a "p" feature letter) could not boot.
    sizes = {o.instance_type for o in offerings}
    assert "Standard_D2s_v5" in sizes and "Standard_NC24ads_A100_v4" in sizes
    assert not {"Standard_D2ps_v5", "Standard_B2pts_v2", "Standard_E2pds_v5"} & sizes


def test_fractional_gpus(offerings):
    counts = {o.accelerator_count for o in offerings if o.accelerator == "A10"}
    assert {0.167, 0.333, 0.5, 1.0, 2.0} <= counts


def test_service_principal(monkeypatch):
    for key, value in {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t",
                       "AZURE_CLIENT_SECRET": "s", "AZURE_SUBSCRIPTION_ID": "sub"}.items():
        monkeypatch.setenv(key, value)
    result = Kernel.load(("cloud",), ["azure"]).clouds()["azure"].check_credentials()
    assert result.ok and "sub" in result.reason


def test_service_principal_without_secret(monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "c")
    monkeypatch.setenv("AZURE_TENANT_ID", "t")
    result = Kernel.load(("cloud",), ["azure"]).clouds()["azure"].check_credentials()
    assert not result.ok and "AZURE_CLIENT_SECRET" in result.hint


def test_az_login_profile(isolated_home):
    azure = isolated_home / ".azure"
    azure.mkdir()
    profile = {"subscriptions": [{"id": "abc-123", "isDefault": True}]}
    (azure / "azureProfile.json").write_text("\ufeff" + json.dumps(profile), encoding="utf-8")
    result = Kernel.load(("cloud",), ["azure"]).clouds()["azure"].check_credentials()
    assert result.ok and "abc-123" in result.reason


def test_importing_the_plugin_does_not_import_the_azure_sdk():
    """The SDK is a dependency for provisioning; loading the plugin stays cheap."""
    script = ("import sys, skyk_azure.plugin, skyk_azure.cloud\n"
              "print(sorted(m for m in sys.modules if m == 'azure' or m.startswith('azure.')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"

"""AWS plugin: the contract, and prices read from the real catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from skyk.plugins.manager import Kernel
from skyk.testing import CloudPluginContract

SHARED = Path(__file__).resolve().parents[4] / "shared" / "catalogs"


class TestAWSContract(CloudPluginContract):
    cloud_name = "aws"

    @pytest.fixture
    def catalog_dir(self) -> Path:
        return SHARED


@pytest.fixture(scope="module")
def offerings():
    found, errors = Kernel.load(("cloud",), ["aws"]).offerings_by_cloud(SHARED)
    assert not errors
    return found["aws"]


def test_every_row_becomes_an_offering(offerings):
    # 2,864 data rows in the extract (see ../shared/catalogs/README.md).
    assert len(offerings) == 2864


def test_zone_ids_and_local_zones_are_kept(offerings):
    zones = {o.zone for o in offerings}
    assert "use1-az1" in zones and "usw2-lax1-az1" in zones
    assert all(o.region for o in offerings)


def test_empty_prices_mean_no_quote(offerings):
    p5e = [o for o in offerings if o.instance_type == "p5e.48xlarge"]
    assert len(p5e) == 9 and all(o.price is None for o in p5e)
    assert sum(o.spot_price is not None for o in p5e) == 4


def test_accelerators_and_counts(offerings):
    p4de = next(o for o in offerings if o.instance_type == "p4de.24xlarge")
    assert (p4de.accelerator, p4de.accelerator_count) == ("A100-80GB", 8.0)
    m6i = next(o for o in offerings if o.instance_type == "m6i.large")
    assert m6i.accelerator is None and m6i.accelerator_count == 0


def test_credentials_from_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    result = Kernel.load(("cloud",), ["aws"]).clouds()["aws"].check_credentials()
    assert result.ok and "env" in result.reason


def test_credentials_from_shared_file(isolated_home):
    aws = isolated_home / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("[default]\naws_access_key_id = A\naws_secret_access_key = B\n")
    result = Kernel.load(("cloud",), ["aws"]).clouds()["aws"].check_credentials()
    assert result.ok and "shared-credentials-file" in result.reason


def test_no_credentials_says_how_to_fix():
    result = Kernel.load(("cloud",), ["aws"]).clouds()["aws"].check_credentials()
    assert not result.ok and "aws configure" in result.hint

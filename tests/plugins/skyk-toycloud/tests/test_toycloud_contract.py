"""The toy cloud proves itself with skyk's contract tests: one subclass."""

from pathlib import Path

import pytest
from skyk.testing import CloudPluginContract


class TestToyCloud(CloudPluginContract):
    cloud_name = "toy"

    @pytest.fixture
    def catalog_dir(self, tmp_path: Path) -> Path:
        (tmp_path / "toy").mkdir()
        shipped = Path(__file__).parents[1] / "src" / "skyk_toycloud" / "vms.csv"
        (tmp_path / "toy" / "vms.csv").write_text(shipped.read_text())
        return tmp_path

    def test_missing_catalog_is_reported_for_this_cloud_only(self):
        pytest.skip("the toy cloud falls back to its shipped price list")

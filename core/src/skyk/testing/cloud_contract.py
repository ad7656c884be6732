"""Contract tests every cloud plugin passes: discovery, naming, catalog, credentials."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import ClassVar

import pytest

from skyk.catalog.offering import Offering
from skyk.plugins.manager import Kernel
from skyk.provision.cloud import Cloud, CredentialCheck
from skyk.testing.imports import heavy_modules_loaded

#: Modules that must not load when a cloud plugin is imported: SDKs and web
#: frameworks belong to provisioning and serving, not to listing or pricing.
HEAVY_MODULES = ("boto3", "botocore", "google.cloud", "googleapiclient", "azure.mgmt",
                 "azure.identity", "pandas", "falcon", "gunicorn")


class _NoNetwork(socket.socket):
    def connect(self, address):  # noqa: D401 - socket API
        raise AssertionError(f"the credentials check tried to connect to {address}")


class CloudPluginContract:
    """Subclass this in a test module and set ``cloud_name``; override ``catalog_dir``.

    ``catalog_dir`` must return a directory with the plugin's catalog files,
    holding at least one offering.
    """

    cloud_name: ClassVar[str]
    #: Whether the plugin reads catalog files (False for clouds that, like
    #: ``local``, describe themselves).
    reads_catalog_files: ClassVar[bool] = True

    @pytest.fixture
    def catalog_dir(self, tmp_path: Path) -> Path:
        """The catalog directory to read offerings from; override it."""
        return tmp_path

    @pytest.fixture
    def kernel(self, monkeypatch) -> Kernel:
        """A kernel with only this cloud plugin loaded."""
        monkeypatch.delenv("SKYK_DISABLE_PLUGINS", raising=False)
        return Kernel.load(("cloud",), [self.cloud_name])

    @pytest.fixture
    def offerings(self, kernel: Kernel, catalog_dir: Path) -> list[Offering]:
        """The plugin's offerings read from ``catalog_dir``."""
        found, errors = kernel.offerings_by_cloud(catalog_dir)
        assert not errors, f"catalog errors: {errors}"
        return found[self.cloud_name]

    def test_found_by_entry_point_with_distribution(self, kernel: Kernel):
        infos = [i for i in kernel.plugins if i.name == self.cloud_name]
        assert len(infos) == 1, f"plugin {self.cloud_name!r} not discovered exactly once"
        info = infos[0]
        assert info.error is None, info.error
        assert info.distribution != "?", "entry point has no owning distribution"
        assert info.version != "?"

    def test_registers_a_cloud_under_its_name(self, kernel: Kernel):
        clouds = kernel.clouds()
        assert list(clouds) == [self.cloud_name]
        cloud = clouds[self.cloud_name]
        assert isinstance(cloud, Cloud)
        assert cloud.name == cloud.name.lower() and "/" not in cloud.name

    def test_credentials_check_needs_no_network(self, kernel: Kernel, monkeypatch):
        monkeypatch.setattr(socket, "socket", _NoNetwork)
        result = kernel.clouds()[self.cloud_name].check_credentials()
        assert isinstance(result, CredentialCheck)
        assert result.reason and "\n" not in result.reason
        if not result.ok:
            assert result.hint, "a failed check must say how to fix it"

    def test_offerings_are_well_formed(self, offerings: list[Offering]):
        assert offerings, "the catalog produced no offerings"
        for offering in offerings:
            assert isinstance(offering, Offering)
            assert offering.cloud == self.cloud_name
            assert offering.instance_type and offering.region
            assert offering.vcpus >= 0 and offering.memory_gib >= 0
            for price in (offering.price, offering.spot_price):
                assert price is None or (price >= 0 and math.isfinite(price))
            assert (offering.accelerator is None) == (offering.accelerator_count == 0)
            if offering.accelerator:
                assert offering.accelerator == offering.accelerator.strip()
                assert " " not in offering.accelerator

    def test_accelerator_names_have_one_spelling(self, offerings: list[Offering]):
        names = {o.accelerator for o in offerings if o.accelerator}
        folded = {n.casefold() for n in names}
        assert len(folded) == len(names), f"names differ only by case: {sorted(names)}"

    def test_catalog_files_are_relative_paths(self, kernel: Kernel):
        files = kernel.catalog_files()
        if self.reads_catalog_files:
            assert files, "a cloud that reads catalog files must list them for refresh"
        for name in files:
            assert not Path(name).is_absolute() and ".." not in Path(name).parts

    def test_missing_catalog_is_reported_for_this_cloud_only(self, kernel: Kernel, tmp_path: Path):
        if not self.reads_catalog_files:
            pytest.skip("this cloud reads no catalog files")
        empty = tmp_path / "empty-catalogs"
        empty.mkdir()
        found, errors = kernel.offerings_by_cloud(empty)
        assert self.cloud_name in errors and self.cloud_name not in found
        assert "\n" not in errors[self.cloud_name]

    def test_blocked_by_skyk_disable_plugins(self, monkeypatch):
        monkeypatch.setenv("SKYK_DISABLE_PLUGINS", f"other,{self.cloud_name.upper()}")
        kernel = Kernel.load(("cloud",))
        assert self.cloud_name not in kernel.clouds()
        assert any(i.name == self.cloud_name and i.disabled for i in kernel.plugins)

    def test_a_provisioning_cloud_finds_and_removes_interrupted_attempts(self, kernel: Kernel):
        # A launch killed while provision() runs leaves only the attempt's uid:
        # the cloud must find what that attempt made, or it leaks (paid) nodes.
        cloud = type(kernel.clouds()[self.cloud_name])
        if cloud.provision is Cloud.provision:
            pytest.skip("this cloud does not provision nodes")
        assert cloud.find_attempt is not Cloud.find_attempt, "implement find_attempt"
        assert cloud.remove_attempt is not Cloud.remove_attempt, "implement remove_attempt"

    def test_import_loads_no_sdk_or_web_framework(self):
        loaded = heavy_modules_loaded("cloud", self.cloud_name, HEAVY_MODULES)
        assert not loaded, f"importing the {self.cloud_name} plugin loaded {loaded}"

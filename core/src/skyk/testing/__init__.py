"""Test kit for plugin authors: contract tests a plugin proves itself with.

A cloud plugin's test module needs one subclass::

    from skyk.testing import CloudPluginContract

    class TestMyCloud(CloudPluginContract):
        cloud_name = "mycloud"

        @pytest.fixture
        def catalog_dir(self, tmp_path):
            ...  # a directory holding <catalog_dir>/mycloud/vms.csv
            return tmp_path

So does a runtime plugin's, stating how its engine spells each command::

    from skyk.testing import RuntimePluginContract

    class TestMyEngine(RuntimePluginContract):
        runtime_name = "myengine"
        engine_program = "myengine"
        expected_readiness_path = "/health"
        expected_queue_metrics = ("myengine:queue_size",)
        readme = Path(__file__).parents[1] / "README.md"  # lists every flag the plugin writes
        distribution = "skyk-myengine"
        engine_title = "MyEngine"  # as the README names the pinned version: "MyEngine 1.2"

        def expected_setup(self, version):
            return ["python", "-m", "pip", "install", f"myengine=={version}"]

        def expected_serve_argv(self, *, model, port, gpus, api_key):
            return ["myengine", "serve", model, "--port", str(port), ...]

A cloud that provisions nodes also runs :class:`ProvisioningContract`
against a fake of its cloud (see :mod:`skyk.testing.provision_contract`),
and a cloud that provides an object store runs :class:`StoreContract`
against an emulator of it (see :mod:`skyk.testing.store_contract`).

Requires pytest (from a skyk checkout: ``pip install './core[testing]'``) and, for runtimes, bash.
"""

from skyk.testing.cloud_contract import CloudPluginContract
from skyk.testing.provision_contract import ProvisioningContract
from skyk.testing.runtime_contract import RuntimePluginContract
from skyk.testing.store_contract import StoreContract

__all__ = ["CloudPluginContract", "ProvisioningContract", "RuntimePluginContract", "StoreContract"]

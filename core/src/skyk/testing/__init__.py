"""Test kit for plugin authors: contract tests a plugin proves itself with.

A cloud plugin's test module needs one subclass::

    from skyk.testing import CloudPluginContract

    class TestMyCloud(CloudPluginContract):
        cloud_name = "mycloud"

        @pytest.fixture
        def catalog_dir(self, tmp_path):
            ...  # a directory holding <catalog_dir>/mycloud/vms.csv
            return tmp_path

Requires pytest (``pip install skyk-core[testing]``).
"""

from skyk.testing.cloud_contract import CloudPluginContract

__all__ = ["CloudPluginContract"]

"""Contract tests for a cloud plugin's provisioning verbs, run against the plugin author's fake.

A cloud that provisions nodes proves, against a fake of its API whose
instances are real machines (or sandboxes) reachable over SSH, that it makes
nodes that run commands, reports what they do, stops and starts them,
deletes them, and finds what a launch killed midway left behind::

    from skyk.testing import ProvisioningContract

    class TestMyCloudProvisioning(ProvisioningContract):
        cloud_name = "mycloud"

        @pytest.fixture
        def cloud_env(self, monkeypatch, my_fake):
            for key, value in my_fake.env().items():   # endpoint, credentials
                monkeypatch.setenv(key, value)
            yield my_fake

        @pytest.fixture
        def offering(self):
            return Offering(cloud="mycloud", instance_type="small", ...)  # one the fake sells

The plugin is pointed at the fake the way a user would point it at another
endpoint (environment variables, configuration files): never by a switch
of its own. skyk's AWS plugin runs this against ``tests/fakecloud``.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import ClassVar

import pytest

from skyk.agent.runners import runner_from_spec
from skyk.catalog.offering import Offering
from skyk.plugins.manager import Kernel
from skyk.provision.cloud import Cloud
from skyk.provision.types import ClusterHandle, ProvisionAttempt, ProvisionRequest

#: states of a node that is gone for good
GONE = ("terminated", "preempted", "missing")


class ProvisioningContract:
    """Subclass this, set ``cloud_name`` and override the ``cloud_env`` and ``offering`` fixtures."""

    cloud_name: ClassVar[str]
    #: seconds a node may take to answer SSH on the fake
    ready_timeout: ClassVar[float] = 120.0

    @pytest.fixture
    def cloud_env(self):
        """Point the plugin at a fake of its cloud for the test; override it."""
        pytest.skip("no fake cloud for this plugin: override the cloud_env fixture")

    @pytest.fixture
    def offering(self) -> Offering:
        """An offering the fake can provision; override it."""
        pytest.skip("override the offering fixture")

    @pytest.fixture
    def cloud(self, cloud_env, monkeypatch) -> Cloud:
        """The plugin's cloud, loaded alone through its entry point."""
        monkeypatch.delenv("SKYK_DISABLE_PLUGINS", raising=False)
        return Kernel.load(("cloud",), [self.cloud_name]).clouds()[self.cloud_name]

    @pytest.fixture
    def provision(self, cloud: Cloud, offering: Offering):
        """Provision ``num_nodes`` nodes; everything made is terminated after the test."""
        made: list[ClusterHandle] = []

        def make(num_nodes: int = 1, **fields) -> tuple[ProvisionRequest, ClusterHandle]:
            request = ProvisionRequest(cluster=f"contract-{secrets.token_hex(3)}",
                                       uid=secrets.token_hex(4), num_nodes=num_nodes,
                                       offering=offering, **fields)
            handle = cloud.provision(request)
            made.append(handle)
            cloud.wait_ready(handle, self.ready_timeout)
            return request, handle

        yield make
        for handle in made:
            with contextlib.suppress(Exception):
                cloud.terminate(handle)

    @staticmethod
    def run(handle: ClusterHandle, rank: int, command: str) -> str:
        """Run ``command`` on node ``rank`` from here; return its output (it must succeed)."""
        result = runner_from_spec(handle.nodes[rank].runner).run(command, timeout=60)
        assert result.returncode == 0, f"node {rank}: {result.stderr.strip()}"
        return result.stdout

    def test_provisioned_nodes_run_commands_and_are_described(self, cloud, provision, offering):
        request, handle = provision(2)
        assert (handle.cluster, handle.uid, handle.cloud) == (request.cluster, request.uid,
                                                              self.cloud_name)
        assert handle.region == offering.region and handle.instance_type == offering.instance_type
        assert len(handle.nodes) == 2
        assert len({n.node_id for n in handle.nodes}) == 2
        assert len({n.internal_ip for n in handle.nodes}) == 2
        for rank in range(2):
            assert self.run(handle, rank, "echo ready").strip() == "ready"
        # The state database stores handles as JSON text.
        assert ClusterHandle.from_json(handle.to_json()) == handle
        assert cloud.query(handle) == ["running", "running"]

    def test_stopped_nodes_keep_their_disks_and_start_again(self, cloud, provision):
        _, handle = provision(1)
        self.run(handle, 0, "echo kept > ~/contract-marker")
        cloud.stop(handle)
        assert cloud.query(handle) == ["stopped"]
        started = cloud.start(handle)
        cloud.wait_ready(started, self.ready_timeout)
        assert cloud.query(started) == ["running"]
        assert self.run(started, 0, "cat ~/contract-marker").strip() == "kept"

    def test_terminated_nodes_are_gone_and_terminate_is_idempotent(self, cloud, provision):
        _, handle = provision(1)
        cloud.terminate(handle)
        assert all(state in GONE for state in cloud.query(handle))
        cloud.terminate(handle)

    def test_an_interrupted_attempt_is_found_by_its_uid_and_removed(self, cloud, provision):
        request, handle = provision(2)
        attempt = ProvisionAttempt.of(request)
        assert cloud.find_attempt(attempt), "find_attempt found nothing of a live attempt"
        cloud.remove_attempt(attempt)
        assert cloud.find_attempt(attempt) == []
        assert all(state in GONE for state in cloud.query(handle))
        cloud.remove_attempt(attempt)

    def test_an_attempt_that_made_nothing_finds_nothing(self, cloud, offering):
        attempt = ProvisionAttempt("contract-none", secrets.token_hex(4), self.cloud_name,
                                   offering.region, offering.zone)
        assert cloud.find_attempt(attempt) == []
        cloud.remove_attempt(attempt)

"""Azure end to end through the real CLI, against the test bed: the fake Resource Manager
(``fakecloud.azure``) with every VM backed by a node twin (``fakecloud.twins``).

skyk is pointed at the bed only by what a user could set (``AZURE_RESOURCE_MANAGER_ENDPOINT``,
``AZURE_AUTHORITY_HOST``, the service principal, ``REQUESTS_CA_BUNDLE``); the product code
does not know it is being tested. Needs root, ``ip``, ``sshd`` and ``sudo`` (skipped
otherwise, failed in CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import testbed_helpers as tb
from lifecycle_helpers import status_json
from skyk.builtin.local_sandbox import find_processes
from skyk.catalog.offering import Offering

pytestmark = pytest.mark.slow

pytest.importorskip("azure.mgmt.compute")

#: Twins of this file: a bridge and subnet of their own, apart from the other beds.
BRIDGE, SUBNET = "skykaz1", "10.221.0.0/16"
REGION = "eastus"
VM = "Microsoft.Compute/virtualMachines"


@pytest.fixture
def bed(tmp_path, shared_catalogs):
    """A fake ARM whose VMs are node twins; checks the fake had no error of its own."""
    from fakecloud.azure import FakeARM

    with tb.bed_with_twins(lambda twins: FakeARM(twins=twins), tmp_path, bridge=BRIDGE, subnet=SUBNET) as fake:
        yield fake


@pytest.fixture
def azure(skyk, bed, isolated_home):
    """Run the CLI pointed at the bed; ``down -a`` afterwards."""

    yield from tb.cli_on_bed(skyk, bed)


def _of(bed, cluster: str | None = None) -> list[dict]:
    """Every resource group and resource of ``cluster`` (of any cluster skyk made, if None)."""
    return [r for r in bed.resources() if "skyk-cluster" in (r.get("tags") or {})
            and (cluster is None or r["tags"]["skyk-cluster"] == cluster)]


def _vms(bed, cluster: str) -> list[dict]:
    """The cluster's VMs in rank order."""
    return sorted((r for r in _of(bed, cluster) if r["type"] == VM),
                  key=lambda r: int(r["tags"]["skyk-node-rank"]))


def _addresses(bed, vm: dict) -> tuple[str, str | None]:
    """A VM's private address (its NIC's) and public one (its public IP's)."""
    resources = {r["id"].lower(): r for r in bed.resources()}
    nic = resources[vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"].lower()]
    config = nic["properties"]["ipConfigurations"][0]["properties"]
    public = resources[config["publicIPAddress"]["id"].lower()]["properties"].get("ipAddress")
    return config["privateIPAddress"], public


def _one_node(tmp_path: Path, infra: str = f"azure/{REGION}") -> str:
    return tb.task_file(tmp_path, f"resources:\n  infra: {infra}\n  cpus: 2+\nrun: echo hi\n")


def _assert_nothing_left(bed, cluster: str) -> None:
    left = [f"{r['type']} {r['name']}" for r in _of(bed, cluster)]
    assert left == [], f"left in Azure: {left}"
    assert [r for r in bed.resources() if r["id"].lower().startswith(
        f"/subscriptions/{bed.subscription_id}/resourcegroups/skyk-{cluster}-")] == []
    tb.assert_no_twins_left(bed)


def test_a_two_node_cluster_lives_its_whole_life_on_azure(azure, bed, tmp_path):
    task = tb.two_node_task(tmp_path, f"azure/{REGION}", "  ports: 8080\n")
    launched, namespaces = tb.launch_on_twins(azure, bed, "pair", task, 2)
    vms = _vms(bed, "pair")
    assert [vm["tags"]["skyk-node-rank"] for vm in vms] == ["0", "1"]
    assert {vm["tags"]["skyk-attempt"] for vm in vms} == {vms[0]["tags"]["skyk-attempt"]}
    profile = vms[0]["properties"]
    assert profile["osProfile"]["adminUsername"] == "azureuser"
    assert profile["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    disk = profile["storageProfile"]["osDisk"]
    assert (disk["diskSizeGB"], disk["managedDisk"]["storageAccountType"], disk["deleteOption"]) \
        == (256, "StandardSSD_LRS", "Delete")
    assert profile["storageProfile"]["imageReference"]["publisher"] == "microsoft-dsvm"
    (nsg,) = [r for r in _of(bed, "pair") if r["type"].endswith("networkSecurityGroups")]
    assert nsg["properties"]["securityRules"][0]["properties"]["destinationPortRanges"] == \
        ["22", "8080"]
    addresses = [_addresses(bed, vm) for vm in vms]
    private = [a[0] for a in addresses]
    assert all(ip.startswith("10.221.") for ip in private)
    tb.assert_both_nodes_ran(launched.stdout, private, "azureuser")
    tb.exec_on_both(azure, "pair", "exec")
    logs = azure("logs", "pair", "1", "--no-follow")
    assert logs.returncode == 0 and "setup on 0 as azureuser" in logs.stdout

    head_ip = azure("status", "--ip", "pair").stdout.strip()
    assert head_ip == addresses[0][1] and head_ip != private[0]

    # A powered-off Azure VM stays allocated and billed: autostop is refused, in one line.
    line = tb.one_clear_line(azure("autostop", "pair", "-i", "5"))
    assert "autostop" in line and "azure" in line

    assert azure("stop", "pair", "-y").returncode == 0
    assert {vm["_power"] for vm in _vms(bed, "pair")} == {"deallocated"}
    assert [c["status"] for c in status_json(azure)] == ["STOPPED"]

    started = azure("start", "pair")
    assert started.returncode == 0, started.stderr
    assert {vm["_power"] for vm in _vms(bed, "pair")} == {"running"}
    assert azure("status", "--ip", "pair").stdout.strip() == _addresses(bed, _vms(bed, "pair")[0])[1]
    tb.exec_on_both(azure, "pair", "back")

    down = azure("down", "pair", "-y")
    assert down.returncode == 0, down.stderr
    _assert_nothing_left(bed, "pair")
    assert bed.resources() == [], "resources left in the subscription"
    assert find_processes([], namespaces) == [], "node processes left"


def _vm_creates(bed) -> list:
    return [c for c in bed.calls if c.action == "vm_create"]


def _region_of(call) -> str:
    """The region of a VM create call, from its resource group's name (skyk-<cluster>-<region>-<uid>)."""
    group = call.path.split("/")[4]
    return group.rsplit("-", 2)[-2]


@pytest.mark.parametrize("code", ["AllocationFailed", "ZonalAllocationFailed", "SkuNotAvailable",
                                  "QuotaExceeded"])
def test_a_region_that_cannot_place_the_vm_is_left_for_the_next(azure, bed, tmp_path, code):
    bed.fail(code, times=1)
    launched = azure("launch", "-c", "moved", _one_node(tmp_path, infra="azure"), "-y")
    assert launched.returncode == 0, launched.stderr
    tried = [line.split(" on azure/")[1].split()[0] for line in launched.stderr.splitlines()
             if line.startswith("Provisioning")]
    assert len(tried) == 2 and tried[0] != tried[1], launched.stderr
    creates = _vm_creates(bed)
    assert [_region_of(c) for c in creates] == tried
    kind = "quota" if code == "QuotaExceeded" else "capacity"
    assert f"failed ({kind}: {code}" in launched.stderr, launched.stderr
    # The failed attempt's group went with everything in it; only the landed one is left.
    groups = [r for r in _of(bed, "moved") if r["type"] == "Microsoft.Resources/resourceGroups"]
    assert [g["location"] for g in groups] == [tried[1]]
    assert len(_vms(bed, "moved")) == 1 and len(bed.twins.twins()) == 1


def test_authorization_failed_blocks_azure_and_leaves_nothing(azure, bed, tmp_path):
    bed.fail("AuthorizationFailed", action="group_create", times=None)
    line = tb.one_clear_line(azure("launch", "-c", "denied", _one_node(tmp_path, infra="azure"), "-y"))
    assert "after 1 attempt(s)" in line and "credentials" in line and "AuthorizationFailed" in line
    assert _of(bed) == [] and bed.twins.twins() == []


def test_a_wrong_secret_is_one_line_and_check_stays_offline(azure, bed, tmp_path):
    checked = azure("check")
    assert checked.returncode == 0, checked.stderr
    assert "azure" in checked.stdout and bed.calls == [], "skyk check used the network"

    bad = azure("launch", "-c", "secret", _one_node(tmp_path), "-y",
                env={"AZURE_CLIENT_SECRET": "wrong"})
    line = tb.one_clear_line(bad)
    assert "after 1 attempt(s)" in line and "credentials: Azure credentials" in line, line
    assert "Invalid client secret" in line, line
    assert {c.action for c in bed.calls} <= {"openid_configuration", "token"}, "ARM was asked"
    assert _of(bed) == [] and bed.twins.twins() == []
    assert tb.cluster_status(azure, "secret", refresh=False) is None


def test_an_evicted_spot_cluster_shows_preempted_and_down_cleans_it(azure, bed, tmp_path):
    launched = azure("launch", "-c", "spot", _one_node(tmp_path), "--use-spot", "-y")
    assert launched.returncode == 0, launched.stderr
    (vm,) = _vms(bed, "spot")
    props = vm["properties"]
    assert (props["priority"], props["evictionPolicy"], props["billingProfile"]["maxPrice"]) == \
        ("Spot", "Delete", -1)
    stop = azure("stop", "spot", "-y")
    assert "spot" in tb.one_clear_line(stop)
    bed.evict(vm["id"])
    tb.shown_unsettled_then_down(azure, "spot", "preempted")
    _assert_nothing_left(bed, "spot")


def test_a_launch_killed_while_waiting_for_ssh_is_cleaned_up_by_tag(azure, bed, tmp_path,
                                                                   shared_catalogs):
    tb.kill_launch_waiting_for_ssh(bed, shared_catalogs, "killed", _one_node(tmp_path))
    assert len(_vms(bed, "killed")) == 1, "the VM should still exist"
    tb.shown_unsettled_then_down(azure, "killed", "interrupted before the node agent started")
    _assert_nothing_left(bed, "killed")


class TestAzureProvisioningContract(tb.BedContract):
    """Azure passes the contract kit's provisioning tests on the test bed."""

    cloud_name = "azure"

    @pytest.fixture
    def offering(self) -> Offering:
        return Offering("azure", "Standard_D2s_v5", 2.0, 8.0, REGION, None, 0.096, 0.020362)


def test_a_launch_asking_for_autostop_is_refused_before_anything_is_made(azure, bed, tmp_path):
    launched = azure("launch", "-c", "idle", _one_node(tmp_path), "-y", "-i", "10")
    line = tb.one_clear_line(launched)
    assert "no place it can run can stop itself when idle" in line and "allocated and billed" in line
    assert "Provisioning" not in launched.stderr and _of(bed) == []

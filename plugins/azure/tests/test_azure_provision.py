"""The Azure plugin against the fake Resource Manager (no node twins): what it asks ARM for,
how ARM's errors steer failover, the retries it makes in place, and that nothing is left.

The plugin is pointed at the fake only as a user would point it at another ARM
endpoint (:meth:`fakecloud.azure.FakeARM.env`).
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

pytest.importorskip("azure.mgmt.compute")

from fakecloud.azure import FakeARM  # noqa: E402
from skyk.catalog.offering import Offering  # noqa: E402
from skyk.plugins.manager import Kernel  # noqa: E402
from skyk.provision.types import ProvisionAttempt, ProvisionError, ProvisionRequest  # noqa: E402

SHARED = Path(__file__).resolve().parents[4] / "shared" / "catalogs"
REGION = "eastus"
CPU = Offering("azure", "Standard_D2s_v5", 2.0, 8.0, REGION, None, 0.096, 0.020362)
GPU = Offering("azure", "Standard_NC4as_T4_v3", 4.0, 28.0, REGION, None, 0.526, 0.2, "T4", 1.0)


@pytest.fixture
def fake(monkeypatch):
    with FakeARM() as arm:
        for key, value in {**arm.env(), "SKYK_CATALOG_DIR": str(SHARED)}.items():
            monkeypatch.setenv(key, value)
        yield arm
    assert arm.errors == []


@pytest.fixture
def cloud(fake):
    return Kernel.load(("cloud",), ["azure"]).clouds()["azure"]


def _request(offering: Offering = CPU, num_nodes: int = 1, **fields) -> ProvisionRequest:
    return ProvisionRequest(cluster="c1", uid=secrets.token_hex(4), num_nodes=num_nodes,
                            offering=offering, **fields)


def _of_type(fake: FakeARM, kind: str) -> list[dict]:
    return [r for r in fake.resources() if r["type"].endswith(kind)]


def test_what_a_two_node_launch_asks_for_and_terminate_removes(cloud, fake):
    request = _request(num_nodes=2, ports=(8080, 8081, 9000), disk_size=100, disk_tier="high")
    handle = cloud.provision(request)
    (group,) = _of_type(fake, "resourceGroups")
    assert group["name"] == f"skyk-c1-{REGION}-{request.uid}"
    assert group["tags"] == {"skyk-cluster": "c1", "skyk-attempt": request.uid}
    vms = sorted(_of_type(fake, "virtualMachines"), key=lambda r: r["name"])
    assert [vm["tags"]["skyk-node-rank"] for vm in vms] == ["0", "1"]
    props = vms[0]["properties"]
    assert props["hardwareProfile"]["vmSize"] == "Standard_D2s_v5"
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "microsoft-dsvm", "offer": "ubuntu-2004", "sku": "2004", "version": "21.11.04"}
    disk = props["storageProfile"]["osDisk"]
    assert (disk["diskSizeGB"], disk["managedDisk"]["storageAccountType"]) == (100, "Premium_LRS")
    ssh = props["osProfile"]["linuxConfiguration"]
    assert ssh["disablePasswordAuthentication"] is True
    assert ssh["ssh"]["publicKeys"][0]["path"] == "/home/azureuser/.ssh/authorized_keys"
    assert "priority" not in props
    (nsg,) = _of_type(fake, "networkSecurityGroups")
    assert nsg["properties"]["securityRules"][0]["properties"]["destinationPortRanges"] == \
        ["22", "8080-8081", "9000"]
    ips = _of_type(fake, "publicIPAddresses")
    assert {(ip["sku"]["name"], ip["properties"]["publicIPAllocationMethod"]) for ip in ips} == \
        {("Standard", "Static")}
    assert len(_of_type(fake, "disks")) == 2
    assert [n.node_id for n in handle.nodes] == [f"skyk-c1-{request.uid}-0", f"skyk-c1-{request.uid}-1"]
    assert handle.nodes[0].runner["user"] == "azureuser"
    assert cloud.query(handle) == ["running", "running"]

    cloud.terminate(handle)
    assert fake.resources() == []
    assert cloud.query(handle) == ["missing", "missing"]
    cloud.terminate(handle)  # idempotent


def test_spot_gpu_and_image_overrides(cloud, fake):
    handle = cloud.provision(_request(GPU, use_spot=True))
    (vm,) = _of_type(fake, "virtualMachines")
    props = vm["properties"]
    assert (props["priority"], props["evictionPolicy"], props["billingProfile"]) == \
        ("Spot", "Delete", {"maxPrice": -1})
    assert props["storageProfile"]["imageReference"]["offer"] == "ubuntu-hpc"
    cloud.terminate(handle)

    urn = cloud.provision(_request(image_id="Canonical:ubuntu-24_04-lts:server:latest"))
    (vm,) = _of_type(fake, "virtualMachines")
    assert vm["properties"]["storageProfile"]["imageReference"]["offer"] == "ubuntu-24_04-lts"
    cloud.terminate(urn)
    image = f"/subscriptions/{fake.subscription_id}/resourceGroups/img/providers" \
            "/Microsoft.Compute/images/mine"
    by_id = cloud.provision(_request(image_id=image))
    (vm,) = _of_type(fake, "virtualMachines")
    assert vm["properties"]["storageProfile"]["imageReference"] == {"id": image}
    cloud.terminate(by_id)


@pytest.mark.parametrize("image", ["ubuntu", "docker:ubuntu:22.04", "skypilot:nonesuch"])
def test_an_unusable_image_id_fails_before_anything_is_made(cloud, fake, image):
    with pytest.raises(ProvisionError) as info:
        cloud.provision(_request(image_id=image))
    assert image in info.value.reason
    assert fake.resources() == [] and not [c for c in fake.calls if c.method == "PUT"]


@pytest.mark.parametrize(("code", "action", "kind", "scope"), [
    ("AllocationFailed", "vm_create", "capacity", "region"),
    ("OverconstrainedAllocationRequest", "vm_create", "capacity", "region"),
    ("ZonalAllocationFailed", "vm_create", "capacity", "region"),  # no zone asked for
    ("SkuNotAvailable", "vm_create", "capacity", "region"),
    ("QuotaExceeded", "vm_create", "quota", "region"),
    ("OperationNotAllowed", "vm_create", "quota", "region"),
    ("AuthorizationFailed", "group_create", "credentials", "cloud"),
    ("SubscriptionNotFound", "group_create", "credentials", "cloud"),
    ("ReadOnlyDisabledSubscription", "nsg_create", "credentials", "cloud"),
    ("InvalidAuthenticationToken", "vnet_create", "credentials", "cloud"),
    ("InvalidParameter", "vm_create", "other", "region"),
])
def test_arm_errors_steer_failover_and_the_attempt_is_removed(cloud, fake, code, action, kind,
                                                               scope):
    fake.fail(code, action=action, times=None if kind == "credentials" else 1)
    request = _request(num_nodes=2)
    with pytest.raises(ProvisionError) as info:
        cloud.provision(request)
    assert (info.value.kind, info.value.scope) == (kind, scope), info.value.reason
    assert code in info.value.reason and "\n" not in info.value.reason
    fake.clear_faults()
    assert fake.resources() == []
    assert cloud.find_attempt(ProvisionAttempt.of(request)) == []


def test_a_zonal_capacity_failure_blocks_the_zone():
    from skyk_azure import errors

    class Failed(Exception):
        pass

    zonal = _arm_error("ZonalAllocationFailed")
    assert (errors.classify(zonal, REGION, "eastus-2").scope,
            errors.classify(zonal, REGION).scope) == ("zone", "region")
    assert errors.classify(_arm_error("AllocationFailed"), REGION, "eastus-2").scope == "region"
    assert errors.classify(Failed("boom"), REGION).kind == "other"


def _arm_error(code: str, status: int = 409, retry_after: str | None = None):
    """An azure-core HttpResponseError with ARM's error (as the SDK parses it) and headers."""
    from types import SimpleNamespace

    from azure.core.exceptions import HttpResponseError, ODataV4Format

    exc = HttpResponseError(message=f"{code} happened.")
    exc.status_code = status
    exc.error = ODataV4Format({"code": code, "message": f"{code} happened."})
    exc.response = SimpleNamespace(headers={"Retry-After": retry_after} if retry_after else {})
    return exc


def test_throttling_and_a_group_being_deleted_are_retried_in_place(cloud, fake, monkeypatch):
    from skyk_azure import errors

    monkeypatch.setattr(errors, "BACKOFF", 0.01)
    fake.fail("TooManyRequests", action="group_create", times=2)
    fake.fail("ResourceGroupBeingDeleted", action="nsg_create", times=1, status=409)
    fake.fail("InternalServerError", action="nic_create", times=1)
    handle = cloud.provision(_request())
    faults = [(c.action, c.status) for c in fake.calls if c.fault]
    assert faults == [("group_create", 429), ("group_create", 429), ("nsg_create", 409),
                      ("nic_create", 500)]
    cloud.terminate(handle)
    fake.fail("TooManyRequests", action="group_create", times=None)
    with pytest.raises(ProvisionError) as info:
        cloud.provision(_request())
    assert (info.value.kind, info.value.scope) == ("outage", "region")
    assert len([c for c in fake.calls if c.fault]) == 4 + errors.TRIES


def test_retry_after_is_honoured_but_capped():
    from skyk_azure import errors

    assert errors._pause(_arm_error("TooManyRequests", 429, "3"), 0) == 3.0
    assert errors._pause(_arm_error("TooManyRequests", 429, "3600"), 0) == errors.MAX_PAUSE
    assert errors.retryable(_arm_error("TooManyRequests", 429))
    assert not errors.retryable(_arm_error("SkuNotAvailable"))


def test_an_unreachable_endpoint_is_an_outage_of_the_region(cloud, fake, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AZURE_RESOURCE_MANAGER_ENDPOINT", f"https://127.0.0.1:{port}")
    with pytest.raises(ProvisionError) as info:
        cloud.provision(_request())
    assert (info.value.kind, info.value.scope) == ("outage", "region"), info.value.reason


def test_a_private_authority_turns_instance_discovery_off(monkeypatch):
    from skyk_azure import session

    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    assert not session.private_authority()
    for host in ("login.microsoftonline.com", "https://login.microsoftonline.us/",
                 "login.chinacloudapi.cn"):
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", host)
        assert not session.private_authority(), host
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://adfs.local.azurestack.external/adfs")
    assert session.private_authority()
    monkeypatch.delenv("AZURE_RESOURCE_MANAGER_ENDPOINT", raising=False)
    assert session.endpoint() == "https://management.azure.com"
    monkeypatch.setenv("AZURE_RESOURCE_MANAGER_ENDPOINT", "https://management.local.azurestack.external/")
    assert session.endpoint() == "https://management.local.azurestack.external"


def test_an_attempt_is_found_by_its_tag_and_removed(cloud, fake):
    request = _request(num_nodes=2)
    cloud.provision(request)
    attempt = ProvisionAttempt.of(request)
    (found,) = cloud.find_attempt(attempt)
    assert found == f"resource group skyk-c1-{REGION}-{request.uid} (VMs skyk-c1-{request.uid}-0," \
        f" skyk-c1-{request.uid}-1)"
    cloud.remove_attempt(attempt)
    assert cloud.find_attempt(attempt) == [] and fake.resources() == []


@pytest.mark.parametrize(("size", "accelerator", "tag"), [
    ("Standard_D2s_v5", None, "skypilot:v1-ubuntu-2004"),        # V1 and V2: the CPU image
    ("Standard_D128ads_v7", None, "skypilot:gpu-ubuntu-2204"),   # V2 only: the generation 2 image
    ("Standard_A1_v2", None, "skypilot:v1-ubuntu-2004"),         # V1 only
    ("Standard_NC24ads_A100_v4", "A100", "skypilot:gpu-ubuntu-2204"),
    ("Standard_NC6", "K80", "skypilot:k80-ubuntu-2004"),
])
def test_the_default_image_fits_the_size_generations(size, accelerator, tag):
    from skyk_azure import images

    offering = Offering("azure", size, 2.0, 8.0, REGION, None, 1.0, None, accelerator,
                        1.0 if accelerator else 0.0)
    assert images.default_tag(offering, SHARED) == tag


def test_a_verb_that_azure_refuses_is_one_line_with_a_hint(cloud, fake, monkeypatch):
    from skyk.errors import SkykError

    handle = cloud.provision(_request())
    fake.fail("AuthorizationFailed", action="vm_get", times=None)
    with pytest.raises(SkykError) as info:
        cloud.query(handle)
    assert "Azure could not look up cluster c1's VMs" in str(info.value)
    assert "AuthorizationFailed" in str(info.value) and "\n" not in str(info.value)
    assert "az account show" in info.value.hint
    fake.clear_faults()
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong")
    with pytest.raises(SkykError) as info:
        cloud.stop(handle)
    assert "Azure could not stop cluster c1" in str(info.value) and "Invalid client secret" in str(info.value)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", fake.client_secret)
    cloud.terminate(handle)
    assert fake.resources() == []


@pytest.mark.parametrize(("power", "spot", "state"), [
    ("running", False, "running"), ("starting", True, "running"), (None, False, "running"),
    ("deallocated", False, "stopped"), ("stopped", False, "stopped"),
    ("deallocating", False, "stopped"),
    # skyk never stops spot clusters: a deallocated Spot VM is one Azure evicted.
    ("deallocated", True, "preempted"), ("stopped", True, "stopped"),
    ("gone", True, "preempted"), ("gone", False, "missing"),
])
def test_power_states_are_node_states(power, spot, state):
    from types import SimpleNamespace

    from skyk_azure import vms

    statuses = [SimpleNamespace(code="ProvisioningState/succeeded")]
    if power not in (None, "gone"):
        statuses.append(SimpleNamespace(code=f"PowerState/{power}"))
    vm = None if power == "gone" else SimpleNamespace(instance_view=SimpleNamespace(statuses=statuses))
    assert vms.node_state(vm, spot) == state


@pytest.fixture
def named_group(cloud, fake, monkeypatch):
    """A resource group of the user's, named by SKYK_AZURE_RESOURCE_GROUP."""
    from skyk_azure import session

    session.clients().resource.resource_groups.create_or_update("mine", {"location": "westus2"})
    monkeypatch.setenv("SKYK_AZURE_RESOURCE_GROUP", "mine")
    return "mine"


def _in_group(fake: FakeARM, group: str) -> list[str]:
    return sorted(f"{r['type'].rsplit('/', 1)[1]} {r['name']}" for r in fake.resources()
                  if f"/resourcegroups/{group}/providers/" in r["id"].lower())


def test_a_named_resource_group_holds_the_cluster_and_keeps_nothing_after(cloud, fake, named_group):
    request = _request(num_nodes=2)
    handle = cloud.provision(request)
    assert [g["name"] for g in _of_type(fake, "resourceGroups")] == ["mine"]
    prefix = f"skyk-c1-{request.uid}"
    assert _in_group(fake, "mine") == sorted(
        [f"networkSecurityGroups {prefix}-nsg", f"virtualNetworks {prefix}-vnet"]
        + [f"{kind} {prefix}-{rank}{suffix}" for rank in (0, 1) for kind, suffix in (
            ("virtualMachines", ""), ("networkInterfaces", "-nic"), ("publicIPAddresses", "-ip"),
            ("disks", "-osdisk"))])
    found = cloud.find_attempt(ProvisionAttempt.of(request))
    assert found[:2] == [f"VM {prefix}-0", f"VM {prefix}-1"] and len(found) == 10
    assert cloud.query(handle) == ["running", "running"]

    cloud.terminate(handle)
    assert _in_group(fake, "mine") == [] and [g["name"] for g in _of_type(fake, "resourceGroups")] == ["mine"]
    # Azure's order: a NIC only once its VM is gone, a public IP only once its NIC is.
    deletes = [c.action for c in fake.calls if c.method == "DELETE"]
    assert deletes.index("nic_delete") > max(i for i, a in enumerate(deletes) if a == "vm_delete")
    assert deletes.index("publicip_delete") > max(i for i, a in enumerate(deletes) if a == "nic_delete")
    assert "group_delete" not in deletes
    assert not [c for c in fake.calls if c.status >= 400 and c.action.endswith("_delete")]
    assert cloud.query(handle) == ["missing", "missing"]
    cloud.terminate(handle)


def test_a_failed_attempt_in_a_named_group_removes_only_its_own(cloud, fake, named_group):
    fake.fail("AllocationFailed", times=1)
    request = _request(num_nodes=2)
    with pytest.raises(ProvisionError) as info:
        cloud.provision(request)
    assert info.value.kind == "capacity"
    assert _in_group(fake, "mine") == []
    assert cloud.find_attempt(ProvisionAttempt.of(request)) == []
    cloud.remove_attempt(ProvisionAttempt.of(request))


def test_a_named_group_that_does_not_exist_is_one_line_and_nothing_is_made(cloud, fake, monkeypatch):
    monkeypatch.setenv("SKYK_AZURE_RESOURCE_GROUP", "nonesuch")
    with pytest.raises(ProvisionError) as info:
        cloud.provision(_request())
    assert "nonesuch" in info.value.reason and "SKYK_AZURE_RESOURCE_GROUP" in info.value.reason
    assert fake.resources() == []


def test_long_operations_are_polled_soon_then_less_often_unless_arm_says_when():
    from types import SimpleNamespace

    from skyk_azure import session

    def answer(headers: dict) -> SimpleNamespace:
        return SimpleNamespace(http_response=SimpleNamespace(headers=headers))

    polling = session.polling()
    polling._pipeline_response = answer({})
    assert [polling._extract_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    polling._pipeline_response = answer({"Retry-After": "7"})
    assert polling._extract_delay() == 7
    assert session.polling() is not session.polling(), "each operation gets its own"

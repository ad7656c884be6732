"""The GCP test bed (tests/fakecloud/gcp.py) driven by the official google-cloud-compute client.

The client is pointed at the fake with ``client_options={"api_endpoint": ...}``,
REST transport and the fake's service-account key (``FakeGCE.key_file``). Operations are polled through the
fake's zoneOperations/globalOperations ``wait``, never through
``ExtendedOperation.result()``. Tests with node twins need root, ``ip``,
sshd, ssh and sudo; without them they are skipped, except in CI (``CI``
set), where that is a failure.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecloud.gcp import FakeGCE, ssh_keys_cloud_config
from fakecloud.twins import parse_cloud_config, require_twin_tools, ssh_to_twin

compute_v1 = pytest.importorskip("google.cloud.compute_v1")
import google.auth.exceptions  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.oauth2 import service_account  # noqa: E402

ZONE = "us-central1-a"
MACHINE = "n2-standard-2"
BRIDGE, SUBNET = "skykgcp0", "10.218.0.0/16"
USER = "skyk"


SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def credentials(key_file: Path):
    """Service-account credentials from ``key_file``, as google.auth.default() would load them."""
    return service_account.Credentials.from_service_account_file(str(key_file), scopes=SCOPES)


class Clients:
    """The google-cloud-compute clients of one bed."""

    def __init__(self, gce: FakeGCE) -> None:
        options = dict(credentials=credentials(gce.key_file), transport="rest",
                       client_options=gce.client_options())
        self.gce = gce
        self.project = gce.project
        self.instances = compute_v1.InstancesClient(**options)
        self.zone_ops = compute_v1.ZoneOperationsClient(**options)
        self.global_ops = compute_v1.GlobalOperationsClient(**options)
        self.firewalls = compute_v1.FirewallsClient(**options)
        self.disks = compute_v1.DisksClient(**options)
        self.images = compute_v1.ImagesClient(**options)

    def wait(self, op, zone: str | None = ZONE):
        """Wait for ``op`` through the fake; returns the DONE operation."""
        for _ in range(10):
            if zone is None:
                done = self.global_ops.wait(project=self.project, operation=op.name)
            else:
                done = self.zone_ops.wait(project=self.project, zone=zone, operation=op.name)
            if done.status == compute_v1.Operation.Status.DONE:
                return done
        pytest.fail(f"operation {op.name} not DONE")

    def insert(self, name: str, *, zone: str = ZONE, machine: str = MACHINE,
               labels: dict | None = None, spot: bool = False, action: str = "STOP",
               ssh_keys: str | None = None, request_id: str | None = None, nat: bool = True):
        """Insert an instance; returns the insert's operation (not waited for)."""
        scheduling = (compute_v1.Scheduling(provisioning_model="SPOT",
                                            instance_termination_action=action)
                      if spot else compute_v1.Scheduling())
        metadata = compute_v1.Metadata(items=[compute_v1.Items(key="ssh-keys", value=ssh_keys)]
                                       if ssh_keys else [])
        nic = compute_v1.NetworkInterface(
            network="global/networks/default",
            access_configs=[compute_v1.AccessConfig(name="External NAT",
                                                    type_="ONE_TO_ONE_NAT")] if nat else [])
        instance = compute_v1.Instance(
            name=name, machine_type=f"zones/{zone}/machineTypes/{machine}",
            labels=labels or {}, scheduling=scheduling, metadata=metadata,
            network_interfaces=[nic],
            disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=
                                           compute_v1.AttachedDiskInitializeParams(
                                               source_image="projects/debian-cloud/global/"
                                                            "images/family/debian-12"))])
        request = compute_v1.InsertInstanceRequest(project=self.project, zone=zone,
                                                   instance_resource=instance,
                                                   request_id=request_id or str(uuid.uuid4()))
        return self.instances.insert(request=request)

    def get(self, name: str, zone: str = ZONE):
        return self.instances.get(project=self.project, zone=zone, instance=name)

    def names(self, filter_: str = "", zone: str = ZONE) -> list[str]:
        request = compute_v1.ListInstancesRequest(project=self.project, zone=zone,
                                                  filter=filter_)
        return sorted(i.name for i in self.instances.list(request=request))


def nat_ip(instance) -> str:
    return instance.network_interfaces[0].access_configs[0].nat_i_p


@pytest.fixture
def gce(shared_catalogs) -> Iterator[FakeGCE]:
    with FakeGCE(catalog_dir=shared_catalogs) as bed:
        yield bed


@pytest.fixture
def api(gce) -> Clients:
    return Clients(gce)


# -- instances -------------------------------------------------------------------------------

def test_insert_get_list_delete(api, gce):
    op = api.insert("vm-a", labels={"skyk-cluster": "c1"})
    assert op.name.startswith("operation-")
    done = api.wait(op)
    assert not done.error.errors and done.operation_type == "insert"
    vm = api.get("vm-a")
    assert vm.status == "RUNNING"
    assert vm.network_interfaces[0].network_i_p.startswith("10.")
    assert nat_ip(vm)
    assert vm.labels["skyk-cluster"] == "c1"
    assert vm.machine_type.endswith(f"/zones/{ZONE}/machineTypes/{MACHINE}")
    assert vm.self_link.startswith(gce.endpoint)
    assert api.names() == ["vm-a"]

    api.wait(api.instances.delete(project=api.project, zone=ZONE, instance="vm-a"))
    assert api.names() == []
    with pytest.raises(gexc.NotFound):
        api.get("vm-a")
    with pytest.raises(gexc.NotFound) as gone:
        api.instances.delete(project=api.project, zone=ZONE, instance="vm-a")
    assert gone.value.code == 404
    actions = [c.action for c in gce.calls]
    assert actions[0] == "instances.insert" and "zoneOperations.wait" in actions
    assert gce.calls[-1].status == 404 and gce.calls[-1].error == "notFound"


def test_request_id_makes_a_retried_insert_idempotent(api, gce):
    request_id = str(uuid.uuid4())
    first = api.insert("vm-r", request_id=request_id)
    again = api.insert("vm-r", request_id=request_id)
    assert again.name == first.name
    api.wait(first)
    assert api.insert("vm-r", request_id=request_id).name == first.name
    assert api.names() == ["vm-r"]
    with pytest.raises(gexc.Conflict):  # a new requestId for the same name
        api.insert("vm-r")
    assert len([i for i in gce.instances() if i["name"] == "vm-r"]) == 1


def test_stop_and_start_give_a_new_nat_ip(api):
    api.wait(api.insert("vm-s"))
    before = api.get("vm-s")
    api.wait(api.instances.stop(project=api.project, zone=ZONE, instance="vm-s"))
    stopped = api.get("vm-s")
    assert stopped.status == "TERMINATED"
    assert not nat_ip(stopped)
    api.wait(api.instances.start(project=api.project, zone=ZONE, instance="vm-s"))
    started = api.get("vm-s")
    assert started.status == "RUNNING"
    assert nat_ip(started) and nat_ip(started) != nat_ip(before)
    assert started.network_interfaces[0].network_i_p == before.network_interfaces[0].network_i_p


def test_list_filters_on_labels(api):
    for name, cluster in [("vm-1", "a"), ("vm-2", "b"), ("vm-3", "a")]:
        api.wait(api.insert(name, labels={"skyk-cluster": cluster, "role": "head"}))
    assert api.names("labels.skyk-cluster = a") == ["vm-1", "vm-3"]
    assert api.names('labels.skyk-cluster = "b"') == ["vm-2"]
    assert api.names("(labels.skyk-cluster = a) (name = vm-3)") == ["vm-3"]
    assert api.names("labels.skyk-cluster = a AND labels.role = worker") == []
    assert api.names("labels.skyk-cluster != a") == ["vm-2"]
    assert api.names("status = RUNNING") == ["vm-1", "vm-2", "vm-3"]
    with pytest.raises(gexc.BadRequest):
        api.names("labels.skyk-cluster ~~ a")
    api.wait(api.insert("vm-4", zone="us-east1-b", labels={"skyk-cluster": "a"}), zone="us-east1-b")
    request = compute_v1.AggregatedListInstancesRequest(project=api.project,
                                                        filter="labels.skyk-cluster = a")
    found = {zone: sorted(i.name for i in scoped.instances)
             for zone, scoped in api.instances.aggregated_list(request=request)}
    assert found == {f"zones/{ZONE}": ["vm-1", "vm-3"], "zones/us-east1-b": ["vm-4"]}


def test_set_labels_checks_the_fingerprint(api):
    api.wait(api.insert("vm-l", labels={"a": "1"}))
    vm = api.get("vm-l")
    request = compute_v1.InstancesSetLabelsRequest(labels={"a": "2"},
                                                   label_fingerprint=vm.label_fingerprint)
    api.wait(api.instances.set_labels(project=api.project, zone=ZONE, instance="vm-l",
                                      instances_set_labels_request_resource=request))
    assert dict(api.get("vm-l").labels) == {"a": "2"}
    with pytest.raises(gexc.PreconditionFailed):  # the old fingerprint
        api.instances.set_labels(project=api.project, zone=ZONE, instance="vm-l",
                                 instances_set_labels_request_resource=request)


def test_spot_scheduling_and_metadata_are_kept(api):
    api.wait(api.insert("vm-spot", spot=True, action="DELETE", ssh_keys=f"{USER}:ssh-ed25519 AAAA k"))
    vm = api.get("vm-spot")
    assert vm.scheduling.provisioning_model == "SPOT"
    assert vm.scheduling.instance_termination_action == "DELETE"
    assert [(i.key, i.value) for i in vm.metadata.items] == [
        ("ssh-keys", f"{USER}:ssh-ed25519 AAAA k")]


def test_preempt_without_twins(api, gce):
    api.wait(api.insert("vm-stop", spot=True, action="STOP"))
    api.wait(api.insert("vm-del", spot=True, action="DELETE"))
    api.wait(api.insert("vm-std"))
    gce.preempt("vm-stop")
    gce.preempt("vm-del")
    assert api.get("vm-stop").status == "TERMINATED"
    assert api.names() == ["vm-std", "vm-stop"]
    with pytest.raises(ValueError):
        gce.preempt("vm-std")


def test_unknown_zone_and_machine_type(api):
    with pytest.raises(gexc.NotFound):
        api.insert("vm-z", zone="mars-central1-a")
    with pytest.raises(gexc.BadRequest) as bad:
        api.insert("vm-m", machine="n2-imaginary-999")
    assert "n2-imaginary-999" in bad.value.message
    with pytest.raises(gexc.BadRequest):
        api.insert("Bad_Name")


# -- errors and faults ------------------------------------------------------------------------

def test_not_found_error_shape(gce):
    import json
    import urllib.error
    import urllib.request

    url = f"{gce.endpoint}/compute/v1/projects/{gce.project}/zones/{ZONE}/instances/nope"
    token = _access_token(gce)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 404
    error = json.loads(caught.value.read())["error"]
    assert error["code"] == 404
    assert error["errors"][0]["reason"] == "notFound"
    assert f"projects/{gce.project}/zones/{ZONE}/instances/nope" in error["message"]


def test_capacity_fault_ends_the_operation_with_its_code(api, gce):
    rule = gce.fail("ZONE_RESOURCE_POOL_EXHAUSTED", zone=ZONE, machine_type=MACHINE, spot=True)
    api.wait(api.insert("vm-ok"))  # not spot: the rule does not match
    done = api.wait(api.insert("vm-cap", spot=True))
    assert [e.code for e in done.error.errors] == ["ZONE_RESOURCE_POOL_EXHAUSTED"]
    assert ZONE in done.error.errors[0].message
    assert done.http_error_status_code == 503
    assert rule.hits == 1
    with pytest.raises(gexc.NotFound):
        api.get("vm-cap")
    assert [c.fault for c in gce.calls if c.action == "instances.insert"] == [False, True]
    assert not api.wait(api.insert("vm-cap", spot=True)).error.errors  # times=1 used up


def test_quota_fault(api, gce):
    gce.fail("QUOTA_EXCEEDED", zone=ZONE, times=None)
    for name in ("vm-q1", "vm-q2"):
        done = api.wait(api.insert(name))
        assert [e.code for e in done.error.errors] == ["QUOTA_EXCEEDED"]
        assert done.http_error_status_code == 403
    assert api.names() == []


def test_permission_faults_are_http_errors(api, gce):
    gce.fail("forbidden", action="instances.insert")
    with pytest.raises(gexc.Forbidden) as denied:
        api.insert("vm-p")
    assert denied.value.code == 403
    assert gce.calls[-1].error == "forbidden" and gce.calls[-1].fault
    # On a 401 google-auth refreshes the credentials and tries again (a bounded number of times).
    rule = gce.fail("required", action="instances.list", times=None)
    with pytest.raises((gexc.Unauthorized, google.auth.exceptions.GoogleAuthError)):
        api.names()
    assert (gce.calls[-1].status, gce.calls[-1].error) == (401, "required")
    assert rule.hits > 1
    gce.clear_faults()
    assert api.names() == []


# -- firewalls and global operations ---------------------------------------------------------

def test_firewall_crud(api, gce):
    rule = compute_v1.Firewall(
        name="skyk-ssh", network="global/networks/default", direction="INGRESS",
        source_ranges=["0.0.0.0/0"], target_tags=["skyk"],
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])])
    op = api.firewalls.insert(project=api.project, firewall_resource=rule)
    assert not api.wait(op, zone=None).error.errors
    got = api.firewalls.get(project=api.project, firewall="skyk-ssh")
    assert got.allowed[0].ports == ["22"] and got.allowed[0].I_p_protocol == "tcp"
    assert list(got.target_tags) == ["skyk"]
    assert [f.name for f in api.firewalls.list(project=api.project)] == ["skyk-ssh"]
    with pytest.raises(gexc.Conflict):
        api.firewalls.insert(project=api.project, firewall_resource=rule)
    api.wait(api.firewalls.delete(project=api.project, firewall="skyk-ssh"), zone=None)
    assert list(api.firewalls.list(project=api.project)) == []
    with pytest.raises(gexc.NotFound):
        api.firewalls.get(project=api.project, firewall="skyk-ssh")
    with pytest.raises(gexc.NotFound):
        api.global_ops.get(project=api.project, operation="operation-nope")


def test_env_names_the_endpoint_and_project(gce):
    env = gce.env()
    assert env["GOOGLE_CLOUD_PROJECT"] == gce.project
    assert env["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"] == f"{gce.endpoint}/compute/v1/"
    assert gce.client_options() == {"api_endpoint": gce.endpoint}


def test_ssh_keys_become_cloud_config_users():
    text = ssh_keys_cloud_config([{"key": "ssh-keys", "value":
                                   "alice:ssh-ed25519 AAAA1 alice@x\nbad line\n"
                                   "bob:ssh-rsa AAAA2\nalice:ssh-ed25519 AAAA3 second"}])
    users, _ = parse_cloud_config(text)
    assert [(u.name, u.ssh_authorized_keys) for u in users] == [
        ("alice", ("ssh-ed25519 AAAA1 alice@x", "ssh-ed25519 AAAA3 second")),
        ("bob", ("ssh-rsa AAAA2",))]
    assert all(u.sudo == ("ALL=(ALL:ALL) NOPASSWD:ALL",) for u in users)
    assert ssh_keys_cloud_config([{"key": "startup-script", "value": "x"}]) is None


# -- credentials ------------------------------------------------------------------------------

def _access_token(gce: FakeGCE, key_file: Path | None = None) -> str:
    """An access token from the fake's token endpoint (the JWT-bearer grant google-auth makes)."""
    import google.auth.transport.requests

    creds = credentials(key_file or gce.key_file)
    creds.refresh(google.auth.transport.requests.Request())
    return creds.token


def test_the_token_endpoint_grants_tokens_for_issued_keys_only(gce, tmp_path):
    before = gce.token_requests
    token = _access_token(gce)
    assert token.startswith("ya29.") and gce.token_requests == before + 1
    foreign = gce.write_key(tmp_path / "deleted.json", registered=False)
    assert json.loads(foreign.read_text())["token_uri"] == gce.token_url
    with pytest.raises(google.auth.exceptions.RefreshError) as refused:
        _access_token(gce, foreign)
    assert "invalid_grant" in str(refused.value)


def test_compute_requests_need_a_token_the_fake_issued(gce, tmp_path):
    import urllib.error
    import urllib.request

    url = f"{gce.endpoint}/compute/v1/projects/{gce.project}/zones/{ZONE}/instances"
    for header in ({}, {"Authorization": "Bearer ya29.made-up"}):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, headers=header), timeout=10)
        error = json.loads(caught.value.read())["error"]
        assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED"
        assert error["errors"][0]["reason"] in ("required", "authError")
    token = _access_token(gce)
    with urllib.request.urlopen(urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}"}), timeout=10) as answer:
        assert json.loads(answer.read())["kind"] == "compute#instanceList"
    gce.revoke_tokens()
    with pytest.raises(urllib.error.HTTPError) as expired:
        urllib.request.urlopen(urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}"}), timeout=10)
    assert expired.value.code == 401


def test_the_client_library_authenticates_with_the_key_and_not_with_another(gce, tmp_path):
    # Service-account keys go as self-signed JWTs (AIP-4111) through the client library.
    assert Clients(gce).names() == []
    foreign = gce.write_key(tmp_path / "deleted.json", registered=False)
    client = compute_v1.InstancesClient(credentials=credentials(foreign), transport="rest",
                                        client_options=gce.client_options())
    with pytest.raises(gexc.Unauthorized):
        list(client.list(project=gce.project, zone=ZONE))
    assert gce.calls[-1].status == 401 and gce.calls[-1].error == "authError"


def test_env_names_a_usable_key_file(gce):
    env = gce.env()
    info = json.loads(Path(env["GOOGLE_APPLICATION_CREDENTIALS"]).read_text())
    assert info["type"] == "service_account" and info["project_id"] == gce.project
    assert info["token_uri"] == gce.token_url


# -- images, disks, preemption records, quota details ----------------------------------------

def test_images_by_name_and_family(api, gce):
    image = api.images.get(project="deeplearning-platform-release",
                           image="common-cpu-v20240214-py310")  # in the catalog's images.csv
    assert image.status == "READY" and image.self_link.startswith(gce.endpoint)
    gce.add_image("projects/skyk-images/global/images/skyk-old", family="skyk")
    gce.add_image("projects/skyk-images/global/images/skyk-new", family="skyk")
    newest = api.images.get_from_family(project="skyk-images", family="skyk")
    assert newest.name == "skyk-new"
    with pytest.raises(gexc.NotFound) as missing:
        api.images.get(project="skyk-images", image="nope")
    assert "projects/skyk-images/global/images/nope" in missing.value.message
    with pytest.raises(gexc.NotFound):
        api.images.get_from_family(project="skyk-images", family="nope")


def test_the_boot_disk_lives_and_dies_with_its_instance(api, gce):
    api.wait(api.insert("vm-d"))
    (disk,) = api.disks.list(project=api.project, zone=ZONE)
    assert disk.name == "vm-d" and disk.size_gb == 10 and disk.users[0].endswith("/vm-d")
    boot = api.get("vm-d").disks[0]
    assert boot.boot and boot.auto_delete and boot.source == disk.self_link
    with pytest.raises(gexc.BadRequest):
        api.disks.delete(project=api.project, zone=ZONE, disk="vm-d")  # in use
    api.wait(api.instances.delete(project=api.project, zone=ZONE, instance="vm-d"))
    assert list(api.disks.list(project=api.project, zone=ZONE)) == []
    with pytest.raises(gexc.NotFound):
        api.disks.get(project=api.project, zone=ZONE, disk="vm-d")


def test_disk_size_and_type_come_from_initialize_params(api, gce):
    instance = compute_v1.Instance(
        name="vm-big", machine_type=f"zones/{ZONE}/machineTypes/{MACHINE}",
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=False, initialize_params=
                                       compute_v1.AttachedDiskInitializeParams(
                                           disk_size_gb=256, disk_type=f"zones/{ZONE}/diskTypes/pd-ssd",
                                           source_image="projects/ubuntu-os-cloud/global/images/"
                                                        "family/ubuntu-2204-lts"))])
    api.wait(api.instances.insert(project=api.project, zone=ZONE, instance_resource=instance))
    disk = api.disks.get(project=api.project, zone=ZONE, disk="vm-big")
    assert disk.size_gb == 256 and disk.type_.endswith("/diskTypes/pd-ssd")
    api.wait(api.instances.delete(project=api.project, zone=ZONE, instance="vm-big"))
    kept = api.disks.get(project=api.project, zone=ZONE, disk="vm-big")  # not autoDelete
    assert list(kept.users) == []
    api.wait(api.disks.delete(project=api.project, zone=ZONE, disk="vm-big"))
    assert gce.disks() == []


def test_an_unknown_image_refuses_the_insert(api, gce):
    instance = compute_v1.Instance(
        name="vm-img", machine_type=f"zones/{ZONE}/machineTypes/{MACHINE}",
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=
                                       compute_v1.AttachedDiskInitializeParams(
                                           source_image="projects/nobody/global/images/nope"))])
    with pytest.raises(gexc.NotFound):
        api.instances.insert(project=api.project, zone=ZONE, instance_resource=instance)
    assert api.names() == [] and gce.disks() == []


def test_a_preemption_is_recorded_as_a_zone_operation(api, gce):
    api.wait(api.insert("vm-gone", spot=True, action="DELETE"))
    api.wait(api.insert("vm-other", spot=True, action="DELETE"))
    gce.preempt("vm-gone")
    assert api.names() == ["vm-other"]
    assert [d["name"] for d in gce.disks()] == ["vm-other"]
    request = compute_v1.ListZoneOperationsRequest(
        project=api.project, zone=ZONE, filter='operationType="compute.instances.preempted"')
    (record,) = api.zone_ops.list(request=request)
    assert record.status == compute_v1.Operation.Status.DONE
    assert record.target_link.endswith(f"/zones/{ZONE}/instances/vm-gone")
    assert len(list(api.zone_ops.list(project=api.project, zone=ZONE))) > 1


@pytest.mark.parametrize("quota, where", [("GPUS_ALL_REGIONS", "globally"),
                                          ("NVIDIA_T4_GPUS", "in region us-central1")])
def test_quota_errors_name_the_metric_and_its_scope(api, gce, quota, where):
    gce.fail("QUOTA_EXCEEDED", zone=ZONE, quota=quota)
    (error,) = api.wait(api.insert("vm-quota")).error.errors
    assert error.message == f"Quota '{quota}' exceeded.  Limit: 0.0 {where}."
    (detail,) = error.error_details
    assert detail.quota_info.metric_name == f"compute.googleapis.com/{quota.lower()}"
    assert detail.quota_info.limit_name.startswith(quota.replace("_", "-"))
    regional = "region" in where
    assert dict(detail.quota_info.dimensions) == ({"region": "us-central1"} if regional else {})


# -- node twins --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def twin_bed(tmp_path_factory) -> Iterator[tuple[FakeGCE, Path]]:
    require_twin_tools()
    from fakecloud.twins import TwinHost

    key = tmp_path_factory.mktemp("keys") / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gce-test",
                    "-f", str(key)], check=True, capture_output=True)
    with TwinHost(tmp_path_factory.mktemp("twins") / "root", bridge=BRIDGE,
                  subnet=SUBNET) as host, FakeGCE(twins=host) as gce:
        yield gce, key


def ssh(key: Path, address: str, command: str, user: str = USER) -> subprocess.CompletedProcess:
    return ssh_to_twin(key, address, command, user)


def test_twin_login_with_the_ssh_keys_key_and_life_cycle(twin_bed):
    gce, key = twin_bed
    api = Clients(gce)
    public_key = key.with_suffix(".pub").read_text().strip()
    done = api.wait(api.insert("twin-a", ssh_keys=f"{USER}:{public_key}"))
    assert not done.error.errors
    vm = api.get("twin-a")
    twin = gce.twin("twin-a")
    assert twin is not None and twin.state == "running"
    assert nat_ip(vm) == twin.public_ip
    assert vm.network_interfaces[0].network_i_p == twin.private_ip
    result = ssh(key, nat_ip(vm), "id -un; sudo -n id -u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [USER, "0"]
    assert ssh(key, nat_ip(vm), "true", user="root").returncode != 0

    api.wait(api.instances.stop(project=api.project, zone=ZONE, instance="twin-a"))
    assert twin.state == "stopped" and api.get("twin-a").status == "TERMINATED"
    api.wait(api.instances.start(project=api.project, zone=ZONE, instance="twin-a"))
    again = api.get("twin-a")
    assert nat_ip(again) == twin.public_ip and nat_ip(again) != nat_ip(vm)
    assert ssh(key, nat_ip(again), "true").returncode == 0

    api.wait(api.instances.delete(project=api.project, zone=ZONE, instance="twin-a"))
    assert twin.state == "terminated"
    assert not gce.errors


def test_twin_preempt_and_guest_shutdown(twin_bed):
    gce, key = twin_bed
    api = Clients(gce)
    public_key = key.with_suffix(".pub").read_text().strip()
    ops = [api.insert(name, spot=True, action=action, ssh_keys=f"{USER}:{public_key}")
           for name, action in [("twin-del", "DELETE"), ("twin-stop", "STOP"), ("twin-sd", "STOP")]]
    for op in ops:
        assert not api.wait(op).error.errors
    doomed = gce.twin("twin-del")
    gce.preempt("twin-del")
    assert doomed.state == "terminated"
    with pytest.raises(gexc.NotFound):
        api.get("twin-del")
    gce.preempt("twin-stop")
    assert api.get("twin-stop").status == "TERMINATED"
    assert gce.twin("twin-stop").state == "stopped"

    vm = api.get("twin-sd")
    ssh(key, nat_ip(vm), "sudo -n shutdown -h now")
    deadline = time.monotonic() + 20
    while api.get("twin-sd").status != "TERMINATED":
        assert time.monotonic() < deadline, "guest shutdown did not stop the instance"
        time.sleep(0.1)
    assert gce.twin("twin-sd").state == "stopped"
    for name in ("twin-stop", "twin-sd"):
        api.wait(api.instances.delete(project=api.project, zone=ZONE, instance=name))
    assert not gce.errors

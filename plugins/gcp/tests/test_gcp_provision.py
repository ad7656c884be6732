"""GCP provisioning without node twins: names and labels, request building, error
classification, and the plugin against the fake Compute Engine (made-up addresses)."""

from __future__ import annotations

import re

import pytest
import requests
from google.api_core import exceptions as api
from google.auth.exceptions import RefreshError
from skyk.catalog.offering import Offering
from skyk.errors import SkykError
from skyk.provision.types import ProvisionAttempt, ProvisionError, ProvisionRequest
from skyk_gcp import errors, images, instances, labels, session
from skyk_gcp.cloud import GCPCloud
from skyk_gcp.images import Image

REGION, ZONE = "us-central1", "us-central1-a"
CPU = Offering("gcp", "n2-standard-2", 2.0, 8.0, REGION, ZONE, 0.0971, 0.0235)
T4 = Offering("gcp", "n1-standard-4", 4.0, 15.0, REGION, ZONE, 0.54, 0.15, "T4", 1.0)
A100 = Offering("gcp", "a2-highgpu-1g", 12.0, 85.0, REGION, ZONE, 3.67, 1.1, "A100", 1.0)
GCE_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
IMAGE = Image("projects/p/global/images/i", 10)


def _request(offering=CPU, **fields) -> ProvisionRequest:
    return ProvisionRequest(**{"cluster": "dev", "uid": "1a2b3c4d", "num_nodes": 1,
                               "offering": offering, **fields})


# -- names and labels -------------------------------------------------------------------------

@pytest.mark.parametrize("cluster", ["dev", "My.Cluster_1", "x" * 63, "a-" * 31 + "b"])
def test_names_follow_gce_rules_and_stay_unique_per_attempt(cluster):
    names = {labels.instance_name(cluster, "1a2b3c4d", rank) for rank in range(3)}
    names.add(labels.firewall_name(cluster, "1a2b3c4d"))
    assert len(names) == 4 and all(GCE_NAME.fullmatch(n) for n in names), names
    assert all(n.endswith(("-1a2b3c4d", "-0", "-1", "-2")) for n in names)
    assert labels.instance_name(cluster, "ffff0000", 0) not in names
    assert all(re.fullmatch(r"[a-z0-9_-]{0,63}", v)
               for v in labels.attempt_labels(cluster, "1a2b3c4d", 0).values())


def test_request_ids_are_uuids_stable_per_attempt_and_node():
    first = labels.request_id("dev", "1a2b3c4d", "dev-1a2b3c4d-0")
    assert first == labels.request_id("dev", "1a2b3c4d", "dev-1a2b3c4d-0")
    assert first != labels.request_id("dev", "1a2b3c4d", "dev-1a2b3c4d-1")
    assert first != labels.request_id("dev", "ffff0000", "dev-1a2b3c4d-0")
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", first)


@pytest.mark.parametrize("override, endpoint", [
    ("http://127.0.0.1:8123/compute/v1/", "http://127.0.0.1:8123"),
    ("https://compute.googleapis.com/compute/v1/", "https://compute.googleapis.com"),
    ("", None)])
def test_the_endpoint_comes_from_gclouds_override(monkeypatch, override, endpoint):
    monkeypatch.setenv(session.ENDPOINT_ENV, override)
    assert session.api_endpoint() == endpoint


def test_a_malformed_endpoint_override_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(session.ENDPOINT_ENV, "compute.example")
    with pytest.raises(SkykError) as bad:
        session.api_endpoint()
    assert session.ENDPOINT_ENV in str(bad.value) and bad.value.hint


# -- request building -------------------------------------------------------------------------

def test_a_cpu_node_is_labelled_keyed_and_boots_the_default_disk():
    node = instances.instance(_request(), IMAGE, 0, "gcpuser:ssh-ed25519 AAAA skyk", None)
    assert node.name == "dev-1a2b3c4d-0"
    assert node.machine_type == f"zones/{ZONE}/machineTypes/n2-standard-2"
    assert dict(node.labels) == {"skyk-cluster": "dev", "skyk-attempt": "1a2b3c4d", "skyk-node-rank": "0"}
    assert [(i.key, i.value) for i in node.metadata.items] == [("ssh-keys", "gcpuser:ssh-ed25519 AAAA skyk")]
    (disk,) = node.disks
    assert disk.boot and disk.auto_delete
    assert disk.initialize_params.disk_size_gb == 256
    assert disk.initialize_params.disk_type == f"zones/{ZONE}/diskTypes/pd-balanced"
    assert disk.initialize_params.source_image == IMAGE.link
    assert not node.guest_accelerators and not node.tags.items
    assert node.network_interfaces[0].access_configs[0].type_ == "ONE_TO_ONE_NAT"


def test_n1_gets_attached_gpus_and_gpu_machines_carry_theirs():
    t4 = instances.instance(_request(T4), IMAGE, 0, "k", None)
    (gpu,) = t4.guest_accelerators
    assert gpu.accelerator_type == f"zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4"
    assert gpu.accelerator_count == 1
    assert t4.scheduling.on_host_maintenance == "TERMINATE"
    a100 = instances.instance(_request(A100), IMAGE, 0, "k", None)
    assert not a100.guest_accelerators and a100.scheduling.on_host_maintenance == "TERMINATE"


def test_spot_nodes_are_deleted_on_preemption():
    node = instances.instance(_request(use_spot=True), IMAGE, 0, "k", "skyk-dev-1a2b3c4d")
    assert node.scheduling.provisioning_model == "SPOT"
    assert node.scheduling.instance_termination_action == "DELETE"
    assert node.scheduling.on_host_maintenance == "TERMINATE"
    assert list(node.tags.items) == ["skyk-dev-1a2b3c4d"]


@pytest.mark.parametrize("offering, tier, kind", [
    (CPU, "low", "pd-standard"), (CPU, "high", "pd-ssd"), (CPU, "ultra", "pd-extreme"),
    (Offering("gcp", "n4-standard-2", 2.0, 8.0, REGION, ZONE, 0.1, 0.03), "low", "hyperdisk-balanced")])
def test_disk_tiers(offering, tier, kind):
    disk = instances.boot_disk(_request(offering, disk_tier=tier, disk_size=50), IMAGE, "n")
    assert disk.initialize_params.disk_type.endswith(f"/diskTypes/{kind}")
    assert disk.initialize_params.disk_size_gb == 50


def test_a_disk_smaller_than_the_image_and_tpus_are_refused():
    with pytest.raises(ProvisionError, match="smaller than image"):
        instances.boot_disk(_request(disk_size=5), IMAGE, "n")
    tpu = Offering("gcp", "TPU-VM", 0.0, 0.0, REGION, ZONE, 4.2, 1.3, "tpu-v5p-8", 1.0)
    with pytest.raises(ProvisionError) as refused:
        instances.accelerators(_request(tpu))
    assert refused.value.kind == "unsupported"


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    (tmp_path / "gcp").mkdir()
    (tmp_path / "gcp" / "images.csv").write_text(
        "Tag,Region,OS,OSVersion,ImageId,CreationDate,BaseImageId\n"
        "skypilot:custom-cpu-ubuntu-2204,,ubuntu,22.04,projects/sky/global/images/cpu-old,20240101,\n"
        "skypilot:custom-cpu-ubuntu-2204,,ubuntu,22.04,projects/sky/global/images/cpu-new,20250101,\n"
        "skypilot:custom-gpu-ubuntu-2204,,ubuntu,22.04,projects/sky/global/images/gpu,20250101,\n")
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(tmp_path))
    return tmp_path


def test_images_come_from_the_catalog_or_the_task(catalog):
    assert images.chosen_image(_request()) == "projects/sky/global/images/cpu-new"
    assert images.chosen_image(_request(T4)) == "projects/sky/global/images/gpu"
    assert images.chosen_image(_request(image_id="skypilot:custom-gpu-ubuntu-2204")) == \
        "projects/sky/global/images/gpu"
    family = "projects/debian-cloud/global/images/family/debian-12"
    assert images.chosen_image(_request(image_id=family)) == family
    for bad in ("docker:ubuntu", "ubuntu-2204", "skypilot:nope"):
        with pytest.raises(ProvisionError):
            images.chosen_image(_request(image_id=bad))


# -- error classification ---------------------------------------------------------------------

def _http(status: int, reason: str, message: str = "m") -> api.GoogleAPICallError:
    return api.from_http_status(status, f"POST http://x/compute/v1/y: {message}",
                                errors=[{"reason": reason, "message": message, "domain": "global"}])


@pytest.mark.parametrize("exc, kind, scope", [
    (errors.OperationError("ZONE_RESOURCE_POOL_EXHAUSTED", "The zone 'z' does not have enough"),
     "capacity", "zone"),
    (errors.OperationError("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "no"), "capacity", "zone"),
    (errors.OperationError("RESOURCE_POOL_EXHAUSTED", "no"), "capacity", "zone"),
    (errors.OperationError("QUOTA_EXCEEDED", "Quota 'CPUS' exceeded.  Limit: 0.0 in region r.",
                           "CPUS", "r"), "quota", "region"),
    (errors.OperationError("QUOTA_EXCEEDED", "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0"
                           " globally.", "GPUS_ALL_REGIONS"), "quota", "cloud"),
    (errors.OperationError("QUOTA_EXCEEDED", "Quota 'CPUS_ALL_REGIONS' exceeded.  Limit: 0.0"
                           " globally."), "quota", "cloud"),
    (_http(401, "authError"), "credentials", "cloud"),
    (_http(403, "forbidden"), "credentials", "cloud"),
    (_http(403, "accessNotConfigured"), "credentials", "cloud"),
    (_http(403, "rateLimitExceeded"), "outage", "region"),
    (_http(503, "backendError"), "outage", "region"),
    (_http(404, "notFound"), "unsupported", "zone"),
    (_http(400, "invalid"), "other", "region"),
    (RefreshError("invalid_grant: Invalid JWT Signature."), "credentials", "cloud"),
    (requests.exceptions.ConnectionError("Connection refused"), "outage", "region"),
])
def test_classification(exc, kind, scope):
    error = errors.classify(exc, REGION, ZONE)
    assert (error.kind, error.scope) == (kind, scope), error.reason
    assert "\n" not in error.reason and len(error.reason) <= errors.REASON_LIMIT + 80


def test_reasons_drop_the_request_line_and_are_bounded():
    error = errors.classify(_http(403, "forbidden", "Required 'compute.instances.create' " + "x" * 500),
                            REGION, ZONE)
    assert error.reason.startswith("forbidden: Required 'compute.instances.create'")
    assert "http://x" not in error.reason and len(error.reason) <= errors.REASON_LIMIT + 80


def test_throttling_is_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr(errors, "BACKOFF", 0.0)
    answers = [_http(403, "rateLimitExceeded"), _http(503, "backendError"), "done"]

    def method(retry, **_):
        assert retry is None, "the client's own retries must be off"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert errors.call(method) == "done"
    answers[:] = [_http(403, "rateLimitExceeded")] * 5
    with pytest.raises(api.Forbidden):
        errors.call(method)
    assert len(answers) == 5 - errors.TRIES
    answers[:] = [_http(403, "forbidden"), "done"]
    with pytest.raises(api.Forbidden):
        errors.call(method)
    assert answers == ["done"], "a permission error was retried"


# -- the plugin on the fake, without twins ----------------------------------------------------

@pytest.fixture
def gce(monkeypatch, isolated_home, shared_catalogs):
    from fakecloud.gcp import FakeGCE

    with FakeGCE(catalog_dir=shared_catalogs) as fake:
        for key, value in {**fake.env(), "SKYK_CATALOG_DIR": str(shared_catalogs)}.items():
            monkeypatch.setenv(key, value)
        yield fake


def _nothing_left(gce) -> bool:
    return not gce.instances() and not gce.disks() and not gce.firewalls()


def test_one_failed_node_removes_the_whole_attempt(gce):
    gce.fail("ZONE_RESOURCE_POOL_EXHAUSTED", times=1)
    with pytest.raises(ProvisionError) as failed:
        GCPCloud().provision(_request(num_nodes=3, ports=(8080,)))
    assert (failed.value.kind, failed.value.scope) == ("capacity", "zone")
    assert len([c for c in gce.calls if c.action == "instances.insert"]) == 3
    assert [c.action for c in gce.calls if c.action == "firewalls.insert"] == ["firewalls.insert"]
    assert _nothing_left(gce)


def test_an_unknown_image_fails_before_anything_is_made(gce):
    with pytest.raises(ProvisionError) as failed:
        GCPCloud().provision(_request(image_id="projects/nobody/global/images/nope"))
    assert (failed.value.kind, failed.value.scope) == ("other", "region")
    assert "projects/nobody/global/images/nope" in failed.value.reason
    assert {c.action for c in gce.calls} == {"images.get"}


def test_a_transient_insert_error_is_retried_with_the_same_request_id(gce, monkeypatch):
    monkeypatch.setattr(errors, "BACKOFF", 0.0)
    gce.fail("backendError", times=2)
    cloud = GCPCloud()
    handle = cloud.provision(_request())
    inserts = [c for c in gce.calls if c.action == "instances.insert"]
    assert len(inserts) == 3 and len({c.params["requestId"] for c in inserts}) == 1
    assert len(gce.instances()) == 1
    cloud.terminate(handle)
    assert _nothing_left(gce)


def test_an_endpoint_nobody_answers_is_an_outage_of_the_region(gce, monkeypatch):
    monkeypatch.setenv(session.ENDPOINT_ENV, "http://127.0.0.1:9/compute/v1/")
    with pytest.raises(ProvisionError) as failed:
        GCPCloud().provision(_request())
    assert (failed.value.kind, failed.value.scope) == ("outage", "region")


def test_a_cluster_whose_instances_are_gone_reads_missing_and_terminates(gce):
    cloud = GCPCloud()
    handle = cloud.provision(_request(num_nodes=2))
    attempt = ProvisionAttempt("dev", "1a2b3c4d", "gcp", REGION, ZONE)
    assert len(cloud.find_attempt(attempt)) == 2
    cloud.remove_attempt(attempt)
    assert cloud.query(handle) == ["missing", "missing"]
    with pytest.raises(SkykError, match="no instances left"):
        cloud.stop(handle)
    cloud.terminate(handle)
    assert _nothing_left(gce)


def test_verbs_with_a_refused_key_fail_with_one_line(gce, tmp_path, monkeypatch):
    cloud = GCPCloud()
    handle = cloud.provision(_request())
    deleted = gce.write_key(tmp_path / "deleted.json", registered=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(deleted))
    with pytest.raises(SkykError) as refused:
        cloud.query(handle)
    assert "authError" in str(refused.value) and refused.value.hint
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(gce.key_file))
    cloud.terminate(handle)
    assert _nothing_left(gce)

"""Whether a launch may reuse an existing cluster: resources, host size, and GPU memory for a model.

The clusters are handles as the state database keeps them; the host sizes
come from the real catalogs in ``../shared/catalogs``.
"""

from __future__ import annotations

import pytest
from skyk.errors import SkykError
from skyk.lifecycle.reuse import check_fits
from skyk.provision.types import ClusterHandle, NodeInfo
from skyk.spec.task import task_from_mapping


def handle(cloud: str, region: str, instance_type: str, accelerator: str | None = None,
           count: float = 0, nodes: int = 1) -> ClusterHandle:
    node = NodeInfo("n0", "10.0.0.2", None, {"kind": "local"})
    return ClusterHandle("c", "uid", cloud, region, None, instance_type, False, 1.0,
                         accelerator, count, (node,) * nodes)


def task(**fields):
    return task_from_mapping({"run": "true", **fields}, "t.yaml")


def served(model: str, **fields):
    return task(runtime={"engine": "vllm", "model": model}, **fields)


@pytest.fixture(autouse=True)
def catalogs(shared_catalogs, monkeypatch):
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(shared_catalogs))


def refused(task, on: ClusterHandle) -> str:
    with pytest.raises(SkykError) as caught:
        check_fits(task, None, None, on)
    line = caught.value.one_line()
    assert "skyk down c" in line
    return line


M5_LARGE = handle("aws", "us-east-1", "m5.large")  # 2 vCPUs, 8 GiB by the catalog
L4_HOST = handle("gcp", "us-east4", "g2-standard-4", "L4", 1)


def test_cpus_and_memory_are_checked_against_the_catalogs_host():
    check_fits(task(resources={"cpus": "2+", "memory": 8}), None, None, M5_LARGE)
    assert "does not have the resources" in refused(task(resources={"cpus": "4+"}), M5_LARGE)
    assert "does not have the resources" in refused(task(resources={"memory": "32+"}), M5_LARGE)
    # Either alternative may fit.
    check_fits(task(resources={"any_of": [{"cpus": "64+"}, {"memory": "8+"}]}), None, None, M5_LARGE)


def test_pins_accelerators_and_nodes_still_count():
    assert "does not have the resources" in refused(task(resources={"accelerators": "L4:2"}), L4_HOST)
    assert "does not have the resources" in refused(task(resources={"cloud": "aws"}), L4_HOST)
    assert "does not have the resources" in refused(task(num_nodes=2), L4_HOST)
    check_fits(task(resources={"accelerators": "l4"}), None, None, L4_HOST)


def test_a_served_model_must_fit_the_clusters_gpus():
    check_fits(served("Qwen/Qwen2-7B-Instruct"), None, None, L4_HOST)
    line = refused(served("Qwen/Qwen2-72B-Instruct"), L4_HOST)
    assert "has 20.1 GiB of usable GPU memory, and Qwen/Qwen2-72B-Instruct needs ~162.9 GiB" in line
    big = handle("gcp", "us-central1", "a2-ultragpu-4g", "A100-80GB", 4)
    check_fits(served("Qwen/Qwen2-72B-Instruct"), None, None, big)


def test_accelerators_the_user_names_are_not_second_guessed():
    check_fits(served("Qwen/Qwen2-72B-Instruct", resources={"accelerators": "L4:1"}), None, None, L4_HOST)


def test_a_cluster_without_gpus_serves_only_where_the_cloud_has_none():
    assert "has no GPU, and Qwen/Qwen2-7B-Instruct needs ~17.6 GiB" in refused(
        served("Qwen/Qwen2-7B-Instruct"), M5_LARGE)


def test_a_host_the_catalog_no_longer_lists_is_not_refused_for_its_size():
    check_fits(task(resources={"cpus": "4+"}), None, None, handle("aws", "us-east-1", "m99.retired"))


def test_a_local_cluster_on_a_machine_without_gpus_runs_the_model_as_written(monkeypatch):
    from skyk.builtin import local_cloud

    monkeypatch.setattr(local_cloud, "detect_gpus", lambda: (None, 0))
    check_fits(served("Qwen/Qwen2-7B-Instruct"), None, None, handle("local", "local", "local"))
    assert "does not have the resources" in refused(task(resources={"cpus": "4096+"}),
                                                    handle("local", "local", "local"))

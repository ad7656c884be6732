"""``skyk launch --dryrun`` against the real catalogs picks what the CSVs say is cheapest."""

from __future__ import annotations

import json

import pytest
from catalog_math import cheapest_gcp_fixed, cheapest_whole_rows


def plan(skyk, tmp_path, yaml_text, *flags, env=None):
    path = tmp_path / "task.yaml"
    path.write_text(yaml_text)
    result = skyk("launch", "--dryrun", str(path), "-o", "json", *flags, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("spot", [False, True])
def test_a100_8_is_the_cheapest_of_three_catalogs(skyk, tmp_path, shared_catalogs, spot):
    expected = {
        "aws": cheapest_whole_rows(shared_catalogs / "aws" / "vms.csv", "A100", 8, spot),
        "azure": cheapest_whole_rows(shared_catalogs / "azure" / "vms.csv", "A100", 8, spot),
        "gcp": cheapest_gcp_fixed(shared_catalogs / "gcp" / "vms.csv", "a2-highgpu-8g", "A100", 8,
                                  spot),
    }
    text = "resources:\n  accelerators: A100:8\n" + ("  use_spot: true\n" if spot else "")
    out = plan(skyk, tmp_path, text)
    cloud = min(expected, key=expected.get)
    assert out["chosen"]["cloud"] == cloud
    assert out["chosen"]["hourly_cost"] == pytest.approx(expected[cloud])
    assert out["chosen"]["accelerators"] == {"name": "A100", "count": 8}
    assert out["chosen"]["use_spot"] is spot
    per_cloud = {c["cloud"]: c["hourly_cost"] for c in out["best_per_cloud"]}
    assert per_cloud == pytest.approx(expected)
    assert out["considered"] >= len(out["best_per_cloud"])


def test_spot_flag_and_case_insensitive_names(skyk, tmp_path, shared_catalogs):
    expected = cheapest_whole_rows(shared_catalogs / "aws" / "vms.csv", "A100", 8, True)
    out = plan(skyk, tmp_path, "resources:\n  accelerators: a100:8\n", "--use-spot", "--cloud", "aws")
    assert out["chosen"]["hourly_cost"] == pytest.approx(expected)
    assert out["chosen"]["accelerators"]["name"] == "A100"


def test_num_nodes_multiplies(skyk, tmp_path, shared_catalogs):
    expected = cheapest_whole_rows(shared_catalogs / "aws" / "vms.csv", "A100", 8, False)
    out = plan(skyk, tmp_path, "num_nodes: 2\nresources:\n  infra: aws\n  accelerators: A100:8\n")
    assert out["chosen"]["hourly_cost"] == pytest.approx(2 * expected)


def test_ordered_list_prefers_the_first_feasible(skyk, tmp_path):
    # H100:3 exists nowhere, so the L4:1 preference wins although T4 is cheaper.
    out = plan(skyk, tmp_path, "resources:\n  infra: aws\n  accelerators: ['H100:3', L4, T4]\n")
    assert out["chosen"]["accelerators"]["name"] == "L4"


def test_unordered_set_takes_the_cheaper(skyk, tmp_path):
    out = plan(skyk, tmp_path, "resources:\n  infra: aws\n  accelerators: {L4:1, T4:1}\n")
    assert out["chosen"]["accelerators"]["name"] == "T4"


def test_pins_are_honoured(skyk, tmp_path):
    out = plan(skyk, tmp_path, "resources:\n  accelerators: H100:8\n  infra: gcp/us-east4\n")
    assert (out["chosen"]["cloud"], out["chosen"]["region"]) == ("gcp", "us-east4")
    out = plan(skyk, tmp_path, "resources:\n  instance_type: g5.xlarge\n")
    assert out["chosen"]["instance_type"] == "g5.xlarge"


def test_cpu_task_runs_locally_for_free(skyk, tmp_path):
    out = plan(skyk, tmp_path, "run: echo hi\n")
    assert out["chosen"]["cloud"] == "local" and out["chosen"]["hourly_cost"] == 0


def test_default_cpu_instance_on_aws(skyk, tmp_path):
    out = plan(skyk, tmp_path, "resources:\n  cloud: aws\nrun: echo hi\n")
    assert out["chosen"]["vcpus"] >= 8 and out["chosen"]["memory_gib"] >= 32
    assert out["chosen"]["accelerators"] is None


def test_table_output(skyk, tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("name: train\nresources:\n  accelerators: A100:8\n")
    result = skyk("launch", "--dryrun", str(path), "-c", "mycluster")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("INFRA"))
    for column in ("INSTANCE", "vCPUs", "MEM(GiB)", "ACCELERATORS", "$/h", "CHOSEN"):
        assert column in header
    assert sum("✔" in line for line in lines) == 1
    assert any(line.startswith("Considered ") and "candidates" in line for line in lines)


def test_disabled_clouds_are_not_considered(skyk, tmp_path):
    out = plan(skyk, tmp_path, "resources:\n  accelerators: A100:8\n",
               env={"SKYK_DISABLE_PLUGINS": "gcp,azure"})
    assert {c["cloud"] for c in out["best_per_cloud"]} == {"aws"}

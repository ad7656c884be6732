"""Every command has --help; tables have a JSON twin; the third-party toy cloud shows up."""

from __future__ import annotations

import json

import pytest
from skyk.cli.main import COMMANDS


@pytest.mark.parametrize("argv", [[], *[[c] for c in COMMANDS], ["catalog", "refresh"]])
def test_help(skyk, argv):
    result = skyk(*argv, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: skyk" in result.stdout


def test_version(skyk):
    result = skyk("--version")
    assert result.returncode == 0 and result.stdout.startswith("skyk ")


def test_check_lists_every_cloud_with_a_reason(skyk):
    result = skyk("check", "-o", "json", env={"TOYCLOUD_TOKEN": "t"})
    assert result.returncode == 0, result.stderr
    rows = {r["cloud"]: r for r in json.loads(result.stdout)}
    assert {"local", "aws", "gcp", "azure", "toy"} <= set(rows)
    assert rows["local"]["enabled"] and rows["toy"]["enabled"]
    assert not rows["aws"]["enabled"] and rows["aws"]["hint"]
    table = skyk("check", "aws", "local")
    assert "Enabled clouds: local" in table.stdout


def test_show_gpus_list_and_prices(skyk):
    listing = json.loads(skyk("show-gpus", "-o", "json").stdout)
    names = {r["accelerator"]: r for r in listing}
    assert {"A100", "H100", "L4", "T4", "ToyGPU"} <= set(names)
    assert names["A100"]["clouds"] == ["aws", "azure", "gcp"]
    prices = json.loads(skyk("show-gpus", "a100:8", "-o", "json").stdout)
    assert prices and all(r["accelerator"] == "A100" and r["accelerator_count"] == 8 for r in prices)
    assert {r["cloud"] for r in prices} == {"aws", "azure", "gcp"}
    assert prices == sorted(prices, key=lambda r: r["price"])
    regions = json.loads(skyk("show-gpus", "A100:8", "--cloud", "aws", "--all-regions",
                              "-o", "json").stdout)
    assert len({r["region"] for r in regions}) > 1 and {r["cloud"] for r in regions} == {"aws"}
    table = skyk("show-gpus", "H100")
    assert table.returncode == 0 and table.stdout.startswith("CLOUD")


def test_show_gpus_prices_in_a_row_all_come_from_the_region_it_names(skyk):
    # Once, AWS's p4d.24xlarge row said us-east-2 with us-east-1's spot price.
    rows = json.loads(skyk("show-gpus", "A100:8", "-o", "json").stdout)
    by_region = {(r["cloud"], r["instance_type"], r["region"]): r
                 for r in json.loads(skyk("show-gpus", "A100:8", "--all-regions", "-o", "json").stdout)}
    for row in rows:
        there = by_region[(row["cloud"], row["instance_type"], row["region"])]
        assert (row["price"], row["spot_price"]) == (there["price"], there["spot_price"]), row


def test_show_gpus_lists_gpus_with_their_memory_and_tpus_on_request(skyk):
    shown = skyk("show-gpus")
    assert shown.stdout.splitlines()[0].split() == ["ACCELERATOR", "GPU_MEM(GiB)", "COUNTS", "CLOUDS"]
    assert "tpu-v" not in shown.stdout.split("\n\n")[0]
    assert "TPU slices" in shown.stdout and "skyk show-gpus --all" in shown.stdout
    listing = {r["accelerator"]: r for r in json.loads(skyk("show-gpus", "-o", "json").stdout)}
    assert listing["A100-80GB"]["memory_gib"] == 80 and listing["H100"]["memory_gib"] == 80
    assert not [name for name in listing if name.startswith("tpu-")]
    everything = json.loads(skyk("show-gpus", "--all", "-o", "json").stdout)
    assert {r["accelerator"] for r in everything} > set(listing)
    assert any(r["accelerator"] == "tpu-v4-8" for r in everything)


def test_third_party_cloud_appears_without_core_changes(skyk, tmp_path):
    plugins = {p["name"]: p for p in json.loads(skyk("plugins", "-o", "json").stdout)}
    assert plugins["toy"]["distribution"] == "skyk-toycloud"
    assert "no toy token" in skyk("check", "toy").stdout
    assert "toy" in skyk("show-gpus", "ToyGPU").stdout
    task = tmp_path / "task.yaml"
    task.write_text("resources:\n  accelerators: ToyGPU:2\n")
    out = json.loads(skyk("launch", "--dryrun", str(task), "-o", "json").stdout)
    assert out["chosen"]["cloud"] == "toy" and out["chosen"]["instance_type"] == "toy.gpu2"


def test_replica_resources_read_as_skypilots_service_table_shows_them():
    from skyk.cli.status import cloud_resources
    from skyk.provision.types import ClusterHandle, NodeInfo

    node = NodeInfo("vm-0", "10.0.0.2", None, {})
    gpu = ClusterHandle("r1", "u", "azure", "eastus", None, "Standard_ND96amsr_A100_v4", False, 32.8,
                        "A100-80GB", 8, (node,))
    assert cloud_resources(gpu, "Azure") == "1x Azure({'A100-80GB': 8})"
    spot = ClusterHandle("r2", "u", "aws", "us-east-1", None, "t3.medium", True, 0.01, None, 0, (node, node))
    assert cloud_resources(spot, "AWS") == "2x AWS([Spot]t3.medium)"
    assert cloud_resources(None, "AWS") == "-"


def test_the_suites_own_clouds_stay_out_of_the_development_venv(skyk):
    """toy and flaky exist for the tests: a developer running the venv's skyk sees real clouds only."""
    import os

    plain = os.pathsep.join(p for p in os.environ["PYTHONPATH"].split(os.pathsep)
                            if not p.endswith(".plugin-site"))
    def clouds(env: dict) -> set[str]:
        return {p["name"] for p in json.loads(skyk("plugins", "-o", "json", env=env).stdout)}

    assert not clouds({"PYTHONPATH": plain or None}) & {"toy", "flaky"}
    assert {"toy", "flaky"} <= clouds({})

"""Fractional accelerators (``T4:0.5``), as SkyPilot documents them: a task asks
for a share of a GPU, the optimizer places it on a node holding at least that
share, and jobs whose shares fit one node run on it at the same time."""

from __future__ import annotations

import json
import os
import stat

import pytest
from lifecycle_helpers import down_everything, wait_for


def _plan(skyk, *args: str) -> dict:
    result = skyk("launch", "--dryrun", *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _counts(plan: dict) -> set[tuple[str, float]]:
    return {(c["accelerators"]["name"], c["accelerators"]["count"]) for c in plan["candidates"]}


def test_half_a_gpu_lands_on_a_one_gpu_node(skyk, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("resources:\n  accelerators: T4:0.5\nrun: nvidia-smi\n")
    assert _counts(_plan(skyk, str(task))) == {("T4", 1.0)}
    assert _counts(_plan(skyk, "--gpus", "V100:0.5", "echo hi")) == {("V100", 1.0)}


def test_a_share_fits_nodes_with_at_least_that_share_up_to_a_whole_gpu(skyk):
    # Azure sells A10 slices (0.167, 0.333, 0.5 of a GPU) beside whole A10s.
    counts = {count for _, count in _counts(_plan(skyk, "--cloud", "azure", "--gpus", "A10:0.25", "echo"))}
    assert counts == {0.333, 0.5, 1.0}
    counts = {count for _, count in _counts(_plan(skyk, "--cloud", "azure", "--gpus", "A10:0.5", "echo"))}
    assert counts == {0.5, 1.0}
    # Whole counts still match exactly.
    assert {c for _, c in _counts(_plan(skyk, "--cloud", "azure", "--gpus", "A10:1", "echo"))} == {1.0}


def test_fractions_in_sets_and_lists(skyk, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("resources:\n  accelerators: {T4:0.5, L4:0.5}\n")
    # The cheapest of the two wins; the other is still a candidate (pinned, it is chosen).
    assert _plan(skyk, str(task))["chosen"]["accelerators"] == {"name": "T4", "count": 1.0}
    plan = _plan(skyk, str(task), "--instance-type", "g2-standard-4")
    assert plan["chosen"]["accelerators"] == {"name": "L4", "count": 1.0}
    task.write_text("resources:\n  accelerators: [L4:0.5, T4:0.5]\n")
    plan = _plan(skyk, str(task))
    assert plan["chosen"]["accelerators"] == {"name": "L4", "count": 1.0}


@pytest.fixture
def one_t4(tmp_path, skyk, isolated_home):
    """The local cloud offers this machine as a node with one T4 (a fake ``nvidia-smi``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Tesla T4'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(*args: str, timeout: float = 120):
        return skyk(*args, env=env, timeout=timeout)

    yield run
    down_everything(skyk, isolated_home)


def _statuses(cli, cluster: str) -> dict[int, str]:
    result = cli("queue", cluster, "-o", "json")
    assert result.returncode == 0, result.stderr
    return {job["id"]: job["status"] for job in json.loads(result.stdout)[cluster]}


def test_two_half_gpu_jobs_share_one_gpu_node(one_t4, tmp_path):
    gate = tmp_path / "go"
    half = tmp_path / "half.yaml"
    half.write_text(f"resources:\n  accelerators: T4:0.5\nrun: while [ ! -e {gate} ]; do sleep 0.05; done\n")
    whole = tmp_path / "whole.yaml"
    whole.write_text("resources:\n  accelerators: T4:1\nrun: echo whole\n")
    launched = one_t4("launch", "-c", "shared", "--cloud", "local", "-d", str(half), "-y")
    assert launched.returncode == 0, launched.stderr
    assert one_t4("exec", "shared", "-d", str(half)).returncode == 0
    # Both halves run at once; a third job needing the whole GPU waits for them.
    assert one_t4("exec", "shared", "-d", str(whole)).returncode == 0
    wait_for(lambda: _statuses(one_t4, "shared") == {1: "RUNNING", 2: "RUNNING", 3: "PENDING"},
             what="both half-GPU jobs running, the whole-GPU job pending")
    gate.touch()
    wait_for(lambda: set(_statuses(one_t4, "shared").values()) == {"SUCCEEDED"},
             what="every job done")


def test_show_gpus_lists_what_a_share_would_launch_on(skyk):
    result = skyk("show-gpus", "A10:0.5", "--cloud", "azure", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert {row["accelerator_count"] for row in json.loads(result.stdout)} == {0.5, 1.0}

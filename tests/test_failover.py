"""Failover through the real CLI, with the flaky test cloud failing in chosen zones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from lifecycle_helpers import node_processes, status_json, wait_for


def _attempted(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_launch_lands_in_the_third_cheapest_zone_and_lists_attempts(skyk, tmp_path):
    attempts = tmp_path / "attempts"
    env = {"FLAKY_FAIL": "flaky-east-1a=capacity,flaky-east-1b=quota", "FLAKY_ATTEMPTS": str(attempts)}
    result = skyk("launch", "-c", "ft", "--cloud", "flaky", "echo landed", "-y", env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert "landed" in result.stdout
        assert _attempted(attempts) == ["flaky-east-1a", "flaky-east-1b", "flaky-west-1a"]
        assert "capacity: injected capacity failure in flaky-east-1a" in result.stderr
        assert "quota: injected quota failure in flaky-east-1b" in result.stderr
        # Once landed, the attempts that failed on the way, as a table.
        lines = result.stderr.splitlines()
        at = lines.index("Provisioned on flaky/flaky-west-1/flaky-west-1a after 2 failed attempt(s):")
        assert lines[at + 1].split() == ["#", "INFRA", "INSTANCE_TYPE", "FAILURE", "BLOCKED", "REASON"]
        assert lines[at + 2].split()[:4] == ["1", "flaky/flaky-east-1/flaky-east-1a", "flaky.cpu", "capacity"]
        assert lines[at + 3].split()[:6] == ["2", "flaky/flaky-east-1/flaky-east-1b", "flaky.cpu", "quota",
                                             "zone", "flaky/flaky-east-1/flaky-east-1b"]
        [cluster] = status_json(skyk)
        assert (cluster["cloud"], cluster["region"], cluster["zone"]) == ("flaky", "flaky-west-1", "flaky-west-1a")
        assert cluster["hourly_price"] == 0.30
    finally:
        skyk("down", "ft", "-y")


# disk_size in GB, or with a unit as SkyPilot's schema allows (1TB is 1024 GB).
@pytest.mark.parametrize(("disk_size", "gb"), [("120", 120), ("1TB", 1024)])
def test_the_request_carries_the_tasks_disk_and_ports(skyk, tmp_path, disk_size, gb):
    requests = tmp_path / "requests"
    task = tmp_path / "task.yaml"
    task.write_text(f"resources:\n  disk_size: {disk_size}\n  disk_tier: high\n  ports: [8000-8001]\nrun: echo hi\n")
    result = skyk("launch", "-c", "fd", "--cloud", "flaky", "-d", str(task), "-y",
                  env={"FLAKY_REQUESTS": str(requests)})
    try:
        assert result.returncode == 0, result.stderr
        [request] = [json.loads(line) for line in requests.read_text().splitlines()]
        assert request == {"disk_size": gb, "disk_tier": "high", "image_id": None, "ports": [8000, 8001]}
    finally:
        skyk("down", "fd", "-y")


def test_region_scoped_failure_skips_the_rest_of_the_region(skyk, tmp_path):
    attempts = tmp_path / "attempts"
    env = {"FLAKY_FAIL": "flaky-east-1a=outage:region", "FLAKY_ATTEMPTS": str(attempts)}
    result = skyk("launch", "-c", "fr", "--cloud", "flaky", "-d", "true", "-y", env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert _attempted(attempts) == ["flaky-east-1a", "flaky-west-1a"]
    finally:
        skyk("down", "fr", "-y")


def test_every_zone_failing_lists_every_attempt_in_one_line(skyk, tmp_path):
    result = skyk("launch", "-c", "fa", "--cloud", "flaky", "echo never", "-y",
                  env={"FLAKY_FAIL": "*=capacity"})
    assert result.returncode == 3
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("skyk: error: could not provision cluster fa after 4 attempt(s)")
    for zone in ("flaky-east-1a", "flaky-east-1b", "flaky-west-1a", "flaky-west-1b"):
        assert zone in error
    assert "--retry-until-up" in error and "Traceback" not in result.stderr
    # Above the line, the attempts as a table: where, what failed and what it ruled out.
    lines = result.stderr.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  INFRA"))
    assert lines[header].split() == ["#", "INFRA", "INSTANCE_TYPE", "FAILURE", "BLOCKED", "REASON"]
    rows = [line.split(maxsplit=8) for line in lines[header + 1:header + 5]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    # No capacity rules out the instance type in that zone, not the zone.
    assert {tuple(r[2:7]) for r in rows} == {("flaky.cpu", "capacity", "flaky.cpu", "in", "zone")}
    assert [r[7] for r in rows] == [r[1] for r in rows], "each failure blocked its own zone"
    assert lines[header + 5] == error
    assert status_json(skyk) == []


def test_a_hanging_region_times_out_and_the_search_moves_on(skyk, tmp_path):
    attempts = tmp_path / "attempts"
    env = {"FLAKY_HANG": "flaky-east-1a", "SKYK_PROVISION_TIMEOUT": "1", "FLAKY_ATTEMPTS": str(attempts)}
    result = skyk("launch", "-c", "fh", "--cloud", "flaky", "-d", "true", "-y", env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert "timeout: no answer after 1s" in result.stderr
        # the whole region is blocked, so east-1b is not tried
        assert _attempted(attempts) == ["flaky-east-1a", "flaky-west-1a"]
    finally:
        skyk("down", "fh", "-y")


def test_retry_until_up_backs_off_until_interrupted(shared_catalogs, tmp_path):
    attempts = tmp_path / "attempts"
    env = dict(os.environ, SKYK_CATALOG_DIR=str(shared_catalogs), FLAKY_FAIL="*=capacity",
               FLAKY_ATTEMPTS=str(attempts), SKYK_RETRY_BACKOFF="0.2", PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([sys.executable, "-m", "skyk", "launch", "-c", "fz", "--cloud", "flaky",
                             "--retry-until-up", "echo never", "-y"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(_attempted(attempts)) >= 12, timeout=30, what="three rounds of attempts")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # the fault handler prints where every thread is
            pytest.fail(f"launch still running 30 s after Ctrl-C:\n{proc.communicate()[1][-8000:]}")
    assert proc.returncode == 130
    assert "retrying in 0.2s" in stderr and "retrying in 0.4s" in stderr and "retrying in 0.8s" in stderr
    assert "Traceback" not in stderr
    time.sleep(0.2)
    count = len(_attempted(attempts))
    time.sleep(1)
    assert len(_attempted(attempts)) == count, "still trying after the interrupt"
    result = subprocess.run([sys.executable, "-m", "skyk", "status", "-o", "json"], env=env,
                            capture_output=True, text=True)
    assert result.stdout.strip() == "[]"
    assert node_processes() == {}


def test_a_launch_that_gave_up_on_hanging_attempts_keeps_them_for_down(skyk):
    # A timed-out attempt may still be making nodes until this process exits: forgetting
    # the cluster would orphan them, so it stays for 'status -r' and 'down'.
    env = {"FLAKY_HANG": "flaky-east-1a,flaky-west-1a", "SKYK_PROVISION_TIMEOUT": "1"}
    result = skyk("launch", "-c", "gaveup", "--cloud", "flaky", "-d", "true", "-y", env=env)
    assert result.returncode != 0 and "timeout: no answer after 1s" in result.stderr
    [cluster] = status_json(skyk)
    assert cluster["name"] == "gaveup" and cluster["status"] == "INIT"
    assert "flaky/flaky-east-1/flaky-east-1a, flaky/flaky-west-1/flaky-west-1a" in cluster["note"]
    assert "'skyk down gaveup' removes what it made" in cluster["note"]
    down = skyk("down", "gaveup", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(skyk) == []


def test_a_launch_plans_over_enabled_clouds_only(skyk, tmp_path):
    # No cloud credentials here: AWS, GCP and Azure are installed but not enabled, so a
    # launch must not try them (and then suggest --retry-until-up), as it once did.
    task = tmp_path / "gpu.yaml"
    task.write_text("resources:\n  accelerators: A100:8\nrun: echo never\n")
    result = skyk("launch", "-c", "gpu", str(task), "-y")
    assert result.returncode == 3
    assert "Provisioning" not in result.stderr and "--retry-until-up" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("skyk: error:")]
    assert "no offering satisfies A100:8:" in line and "local: no A100" in line
    assert "not enabled, so not considered: aws: no AWS credentials found;" in line
    assert "'skyk check'" in line
    pinned = skyk("launch", "-c", "gpu", "--cloud", "gcp", str(task), "-y")
    assert pinned.returncode == 3 and "Provisioning" not in pinned.stderr
    assert "no enabled cloud can run the task (gcp: no application-default credentials found)" in pinned.stderr
    # The dry run still shows what every installed cloud would cost.
    planned = skyk("launch", "--dryrun", str(task))
    assert planned.returncode == 0
    assert all(f"\n{cloud}/" in planned.stdout for cloud in ("aws", "gcp", "azure")), planned.stdout
    assert status_json(skyk) == []


def test_no_capacity_rules_out_the_instance_type_and_other_failures_the_place():
    from skyk.catalog.offering import Offering
    from skyk.optimizer.ranking import Candidate, is_blocked
    from skyk.provision.failover import blocked_location
    from skyk.provision.types import ProvisionError
    from skyk.spec.resources import Requirement

    def offer(kind: str, zone: str = "us-east4-a") -> Offering:
        return Offering("gcp", kind, 96, 384, "us-east4", zone, 8.0, 3.0)

    l4 = Candidate(offer("g2-standard-96"), Requirement(), 0, 8.0)
    full = blocked_location(l4, ProvisionError("capacity", "zone", "ZONE_RESOURCE_POOL_EXHAUSTED"))
    assert is_blocked(offer("g2-standard-96"), {full})
    assert not is_blocked(offer("a2-ultragpu-8g"), {full}), "an A100 machine in the zone is other hardware"
    assert not is_blocked(offer("g2-standard-96", "us-east4-c"), {full})
    quota = blocked_location(l4, ProvisionError("quota", "region", "QUOTA_EXCEEDED"))
    assert is_blocked(offer("a2-ultragpu-8g", "us-east4-c"), {quota})
    denied = blocked_location(l4, ProvisionError("credentials", "cloud", "forbidden"))
    assert denied == ("gcp", None, None, None)

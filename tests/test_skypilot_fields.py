"""SkyPilot task fields skyk accepts but does not (fully) act on yet: spot_recovery
(job_recovery's former name), inputs/outputs, volumes and volume_mounts, and pool."""

from __future__ import annotations

import json

from skyk.spec.resources import JobRecovery
from skyk.spec.task import task_from_mapping

VOLUMES = """\
resources:
  cpus: 1+
  volumes:
    - path: /mnt/disk
      disk_size: 1TB
      attach_mode: read_only
volumes:
  /mnt/data: my-volume
volume_mounts:
  - path: /mnt/other
    volume_name: other
    is_ephemeral: false
inputs: {s3://bucket/data: 100}
outputs: {s3://bucket/out: 0.5}
run: echo hi
"""


def test_spot_recovery_is_read_as_job_recovery():
    task = task_from_mapping({"resources": {"spot_recovery": "failover",
                                            "any_of": [{"cloud": "aws"}]}}, "t.yaml")
    assert task.resources.job_recovery == JobRecovery("FAILOVER")
    [alternative] = task.resources.any_of
    assert task.resources.merged(alternative).job_recovery == JobRecovery("FAILOVER")


def test_volumes_and_data_sizes_plan_but_do_not_launch(skyk, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(VOLUMES)
    planned = skyk("launch", "--dryrun", "--cloud", "local", str(task), "-o", "json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["chosen"]["cloud"] == "local"
    launched = skyk("launch", "-y", "-c", "vol", "--cloud", "local", str(task))
    assert launched.returncode == 2
    assert launched.stderr.strip().splitlines() == [
        f"skyk: error: {task}: volumes: volumes are not supported yet (hint: copy the data with"
        " file_mounts, or fetch it in setup; 'skyk launch --dryrun' still plans the task)"]
    assert json.loads(skyk("status", "-o", "json").stdout) == []
    spec = task_from_mapping({"inputs": {"s3://b/d": 2}, "resources": {"volumes": [{"path": "/d"}]}}, "t")
    assert spec.inputs == {"s3://b/d": 2.0} and spec.resources.volumes == [{"path": "/d"}]


def test_a_pool_dry_run_plans_one_worker(skyk, tmp_path):
    task = tmp_path / "pool.yaml"
    task.write_text("pool:\n  workers: 3\nresources:\n  accelerators: T4\nsetup: echo ready\n")
    planned = skyk("launch", "--dryrun", str(task), "-o", "json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["pool"] == {"workers": 3} and plan["num_nodes"] == 1
    assert plan["chosen"]["accelerators"] == {"name": "T4", "count": 1.0}
    shown = skyk("launch", "--dryrun", str(task)).stdout
    assert "Pool of 3 worker(s); the plan is for one worker:" in shown
    launched = skyk("launch", "-y", str(task))
    assert launched.returncode == 2 and "pool: worker pools are not supported yet" in launched.stderr

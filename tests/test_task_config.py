"""The task-level ``config:`` block (SkyPilot's per-task config overrides): accepted,
checked as a mapping, and what skyk has no setting for named in one warning line."""

from __future__ import annotations

import json

from skyk.spec.task import task_from_mapping

TASK = """\
run: echo hi
config:
  docker:
    run_options: ['--cpus 2']
  kubernetes:
    provision_timeout: 600
    pod_config: {spec: {containers: [{name: x}]}}
"""


def test_a_dry_run_plans_and_warns_once_about_ignored_settings(skyk, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(TASK)
    result = skyk("launch", "--dryrun", str(task), "--cloud", "aws", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["chosen"]["cloud"] == "aws"
    assert result.stderr.splitlines() == [
        f"skyk: warning: {task}: config: skyk has no setting for docker.run_options,"
        " kubernetes.provision_timeout, kubernetes.pod_config; ignored (a SkyPilot config override)"]


def test_no_config_no_warning(skyk, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("run: echo hi\nconfig: {}\n")
    result = skyk("launch", "--dryrun", str(task), "--cloud", "aws")
    assert result.returncode == 0 and result.stderr == ""


def test_the_spec_keeps_the_block():
    task = task_from_mapping({"run": "true", "config": {"nvidia_gpus": {"disable_ecc": True}}}, "t.yaml")
    assert task.config == {"nvidia_gpus": {"disable_ecc": True}}

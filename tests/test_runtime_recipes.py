"""Recipes with ``runtime:``: swapping the engine, serving, dry runs, and tasks without one.

Needs both runtime plugins (skyk-vllm and skyk-sglang), as CI installs them.
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest
from skyk.errors import SpecError
from skyk.runtime.resolve import load_runtime, queue_metrics, resolve_mapping, resolve_task
from skyk.serve.load import QUEUE_METRICS
from skyk.spec.task import load_task, task_from_mapping

RECIPE = """\
name: chat
resources:
  accelerators: {accelerators}
  use_spot: true
envs:
  HF_HUB_ENABLE_HF_TRANSFER: "1"
secrets:
  ENGINE_KEY: sk-test-not-in-any-command
service:
  replica_policy:
    min_replicas: 1
    max_replicas: 3
    target_queue_length_per_replica: 8
runtime:
  engine: {engine}
  model: Qwen/Qwen2.5-7B-Instruct
  api_key: ENGINE_KEY
  args:
    trust_remote_code: true
"""


def recipe(tmp_path, engine: str, accelerators: str = "L4:1"):
    path = tmp_path / f"{engine}.yaml"
    path.write_text(RECIPE.format(engine=engine, accelerators=accelerators))
    return load_task(path)


def differences(a: Any, b: Any, path: str = "") -> set[str]:
    """Return the dotted paths where two dumped tasks differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: set[str] = set()
        for key in a.keys() | b.keys():
            found |= differences(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return found
    return set() if a == b else {path}


@pytest.mark.parametrize("accelerators", ["L4:1", "H100:8"])
def test_swapping_the_engine_changes_setup_run_probe_and_metrics_only(tmp_path, accelerators):
    vllm = resolve_task(recipe(tmp_path, "vllm", accelerators))
    sglang = resolve_task(recipe(tmp_path, "sglang", accelerators))

    changed = differences(vllm.model_dump(), sglang.model_dump())
    assert changed == {"runtime.engine", "setup", "run", "service.readiness_probe.path"}
    assert (vllm.service.readiness_probe.path, sglang.service.readiness_probe.path) == (
        "/health", "/health_generate")
    assert queue_metrics(vllm) == ("vllm:num_requests_waiting",)
    assert queue_metrics(sglang) == ("sglang:num_queue_reqs",)
    # The same port, secrets, envs, spot and autoscaling for both engines.
    assert vllm.resources.ports == sglang.resources.ports == ((8000, 8000),)


def test_plain_recipes_are_untouched(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("setup: pip install flask\nrun: python app.py\nservice:\n  replicas: 1\n")
    task = load_task(path)
    assert resolve_task(task) is task
    assert queue_metrics(task) == QUEUE_METRICS
    assert task.service.probe.path == "/"


def test_queue_metrics_of_a_stored_mapping():
    mapping = {"run": "x", "runtime": {"engine": "sglang", "model": "m"}}
    assert queue_metrics(mapping) == ("sglang:num_queue_reqs",)
    assert queue_metrics({"run": "vllm serve m"}) == QUEUE_METRICS


def test_queue_metrics_of_a_missing_runtime_is_an_error():
    with pytest.raises(SpecError, match="no runtime named 'tgi'"):
        queue_metrics({"runtime": {"engine": "tgi", "model": "m"}})


def test_serve_records_the_generated_fields(tmp_path):
    from skyk.cli.serve import load_service_task

    path = tmp_path / "chat.yaml"
    path.write_text(RECIPE.format(engine="vllm", accelerators="L4:1"))
    mapping = load_service_task(str(path), [], [])

    assert mapping["setup"] == "python -m pip install vllm==0.11.0"
    assert mapping["run"].startswith("vllm serve Qwen/Qwen2.5-7B-Instruct ")
    assert mapping["service"]["readiness_probe"] == {"path": "/health"}
    assert mapping["resources"]["ports"] == [8000]
    assert "sk-test-not-in-any-command" not in mapping["run"]
    # The controller re-reads the record without any runtime plugin, and
    # resolving it again changes nothing.
    stored = task_from_mapping(json.loads(json.dumps(mapping)), "<service chat>")
    assert stored.run == mapping["run"] and stored.service.readiness_probe.path == "/health"
    assert resolve_mapping(mapping, stored) == mapping


def test_launch_resolves_before_planning(tmp_path):
    from skyk.cli.launch import load

    path = tmp_path / "chat.yaml"
    path.write_text(RECIPE.format(engine="sglang", accelerators="L4:1"))
    args = SimpleNamespace(cluster=None, task=str(path), env=[], secret=[], num_nodes=None,
                           **{flag: None for flag in ("cloud", "region", "zone", "infra", "gpus",
                                                      "cpus", "memory", "instance_type",
                                                      "use_spot", "max_hourly_cost")})
    task, _ = load(args)
    assert task.run.startswith("python -m sglang.launch_server --model-path Qwen/Qwen2.5-7B-Instruct")
    assert task.source == str(path)


def test_dry_run_plans_a_runtime_recipe(skyk, tmp_path):
    path = tmp_path / "chat.yaml"
    path.write_text(RECIPE.format(engine="vllm", accelerators="A100:8"))
    result = skyk("launch", "--dryrun", str(path), "-o", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["chosen"]["accelerators"] == {"name": "A100", "count": 8}


def test_a_disabled_runtime_is_named(monkeypatch):
    monkeypatch.setenv("SKYK_DISABLE_PLUGINS", "sglang")
    with pytest.raises(SpecError) as caught:
        load_runtime("sglang", "chat.yaml")
    assert "disabled by SKYK_DISABLE_PLUGINS" in caught.value.one_line()
    assert load_runtime("vllm").name == "vllm"


def test_runtime_section_shape_errors(tmp_path):
    cases = {
        "runtime: vllm\n": "runtime needs the engine and the model",
        "runtime:\n  engine: vllm\n  model: m\n  modle: x\n": "did you mean 'model'",
        "runtime:\n  engine: vllm\n  model: m\n  version: 0.10\n": "read as a number",
        "runtime:\n  engine: vllm\n  model: m\n  args: [a]\n": "expected a mapping",
        "runtime:\n  engine: vllm\n  model: m\n  args:\n    'x y': 1\n": "bad engine argument name",
    }
    for text, expected in cases.items():
        path = tmp_path / "t.yaml"
        path.write_text(textwrap.dedent(text))
        with pytest.raises(SpecError) as caught:
            load_task(path)
        assert expected in caught.value.one_line(), (text, caught.value.one_line())

"""The Qwen recipes in examples/: the 72B service on vLLM and on SGLang, and the sized 7B one.

Prices are checked against the real catalogs in ``../shared/catalogs``, read
independently of skyk (``catalog_math``). Needs both runtime plugins.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from catalog_math import cheapest_set, gpu_memory_mib, sets_that_hold
from skyk.runtime.resolve import queue_metrics, resolve_task
from skyk.spec.task import load_task

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QWEN_72B = EXAMPLES / "serve-72b.yaml"
QWEN_72B_SGLANG = EXAMPLES / "serve-72b-sglang.yaml"
QWEN_7B = EXAMPLES / "serve-7b.yaml"
#: What SkyPilot's serve-72b.yaml allows.
ALLOWED_72B = {("A100", 8), ("A100-80GB", 4), ("A100-80GB", 8)}
GIB = 1024 ** 3


def leaves(value, path=()):
    """Every scalar in a parsed YAML document, keyed by its path."""
    if isinstance(value, dict):
        return {key: item for name, child in value.items()
                for key, item in leaves(child, (*path, str(name))).items()}
    if isinstance(value, list):
        return {key: item for index, child in enumerate(value)
                for key, item in leaves(child, (*path, index)).items()}
    return {path: value}


def dry_run(skyk, recipe: Path, *args: str) -> dict:
    result = skyk("launch", "--dryrun", str(recipe), "-o", "json", *args, cwd=EXAMPLES.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def chosen_set(data: dict) -> tuple[str, int]:
    accelerators = data["chosen"]["accelerators"]
    return accelerators["name"], int(accelerators["count"])


def test_the_72b_recipe_is_skypilots_service(shared_catalogs):
    task = resolve_task(load_task(QWEN_72B).with_overrides())
    resources = task.resources
    choice = resources.accelerators
    assert {(a.name, int(a.count)) for a in choice.options} == ALLOWED_72B and not choice.ordered
    assert (resources.disk_size, resources.disk_tier) == (1024, "best")
    assert (resources.memory.value, resources.memory.at_least) == (32, True)
    assert task.service.replicas == 2 and resources.ports == ((8000, 8000),)
    probe = task.service.readiness_probe
    assert probe.path == "/v1/chat/completions" and probe.initial_delay_seconds == 1200
    # POST, with the model named once in envs and filled in as SkyPilot does.
    assert probe.post_data["model"] == "Qwen/Qwen2-72B-Instruct"
    assert task.run.startswith("vllm serve Qwen/Qwen2-72B-Instruct ")
    assert "--tensor-parallel-size \"$(( ${SKYK_NUM_GPUS_PER_NODE:-1}" in task.run
    assert "--port 8000" in task.run and "--served-model-name Qwen/Qwen2-72B-Instruct" in task.run


def test_the_sglang_service_changes_one_key():
    vllm = leaves(yaml.safe_load(QWEN_72B.read_text()))
    sglang = leaves(yaml.safe_load(QWEN_72B_SGLANG.read_text()))
    assert vllm.keys() == sglang.keys()
    assert {key for key in vllm if vllm[key] != sglang[key]} == {("runtime", "engine")}
    assert sglang["runtime", "engine"] == "sglang"

    before = resolve_task(load_task(QWEN_72B).with_overrides())
    after = resolve_task(load_task(QWEN_72B_SGLANG).with_overrides())
    assert after.run.startswith("python -m sglang.launch_server --model-path Qwen/Qwen2-72B-Instruct ")
    assert "--tp-size \"$(( ${SKYK_NUM_GPUS_PER_NODE:-1}" in after.run
    assert after.setup.startswith("python -m pip install") and "sglang" in after.setup
    assert queue_metrics(before) != queue_metrics(after)
    # The service around the engine is the same: resources, probe, replicas.
    assert after.resources == before.resources and after.service == before.service


@pytest.mark.parametrize("recipe", [QWEN_72B, QWEN_72B_SGLANG])
@pytest.mark.parametrize("spot", [False, True])
def test_the_72b_dry_run_picks_the_cheapest_allowed_set(skyk, shared_catalogs, recipe, spot):
    data = dry_run(skyk, recipe, *(["--use-spot"] if spot else []))
    prices = {key: cheapest_set(shared_catalogs, *key, spot) for key in ALLOWED_72B}
    prices = {key: price for key, price in prices.items() if price is not None}
    best = min(prices.values())
    assert data["chosen"]["hourly_cost"] == pytest.approx(best)
    assert prices[chosen_set(data)] == pytest.approx(best)
    # Nothing outside the allowed sets was even a candidate.
    assert {(c["accelerators"]["name"], int(c["accelerators"]["count"]))
            for c in data["candidates"]} <= ALLOWED_72B
    assert all(c["memory_gib"] >= 32 for c in data["candidates"])


def test_the_7b_recipe_is_sized_from_the_model(skyk, shared_catalogs):
    data = dry_run(skyk, QWEN_7B)
    needed_gib = 7e9 * 2 / GIB * 1.2 + 2  # the documented rule, written out
    name, count = chosen_set(data)
    memory = gpu_memory_mib([shared_catalogs / "aws" / "vms.csv", shared_catalogs / "gcp" / "vms.csv"])
    assert count * memory[name] / 1024 * 0.9 >= needed_gib
    # No set that holds it is cheaper (GPUs GCP prices as N1 host + GPU are left out here).
    quotes = [price for key in sets_that_hold(shared_catalogs, needed_gib)
              if (price := cheapest_set(shared_catalogs, *key, False)) is not None]
    assert data["chosen"]["hourly_cost"] == pytest.approx(min(quotes))
    assert data["model_size"]["source"] == "model name"


def test_env_overrides_reach_the_probe_and_the_model(skyk):
    task = load_task(QWEN_7B).with_overrides(["MODEL_NAME=Qwen/Qwen2-1.5B-Instruct"])
    assert task.service.readiness_probe.post_data["model"] == "Qwen/Qwen2-1.5B-Instruct"
    assert task.runtime.model == "Qwen/Qwen2-1.5B-Instruct"
    data = dry_run(skyk, QWEN_7B, "--env", "MODEL_NAME=Qwen/Qwen2-1.5B-Instruct")
    assert data["model_size"]["params"] == pytest.approx(1.5e9)


#: A service in the shape SkyPilot's own Qwen recipe has: no runtime section, its own
#: setup and run, and the model named once in envs and used in the probe.
SKYPILOT_SHAPED = """\
envs:
  MODEL_NAME: Qwen/Qwen2-72B-Instruct
service:
  readiness_probe:
    path: /v1/chat/completions
    post_data:
      model: $MODEL_NAME
      messages:
        - role: user
          content: Hello! What is your name?
      max_tokens: 1
    initial_delay_seconds: 1200
  replicas: 2
resources:
  accelerators: {A100:8, A100-80GB:4, A100-80GB:8}
  disk_size: 1024
  disk_tier: best
  memory: 32+
  ports: 8000
setup: |
  pip install vllm
run: |
  python -u -m vllm.entrypoints.openai.api_server --host 0.0.0.0 --port 8000 \\
    --model $MODEL_NAME --tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE
"""


def test_a_skypilot_shaped_recipe_plans_like_ours(skyk, tmp_path):
    path = tmp_path / "serve-72b.yaml"
    path.write_text(SKYPILOT_SHAPED)
    task = load_task(path).with_overrides()
    assert task.service.readiness_probe.post_data["model"] == "Qwen/Qwen2-72B-Instruct"
    assert "--model $MODEL_NAME" in task.run  # the node's shell expands it
    theirs, ours = dry_run(skyk, path), dry_run(skyk, QWEN_72B)
    assert theirs["chosen"] == ours["chosen"]

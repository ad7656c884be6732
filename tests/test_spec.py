"""The task spec accepts SkyPilot's YAML forms and normalises them."""

from __future__ import annotations

import re
import textwrap

import pytest
from skyk.errors import SpecError
from skyk.spec.resources import ResourceFields
from skyk.spec.task import load_task, task_from_mapping
from skyk.spec.values import Accelerator, Quantity


def task(text: str, tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(textwrap.dedent(text))
    return load_task(path)


@pytest.mark.parametrize("written, expected, ordered", [
    ("A100", [("A100", 1)], False),
    ("A100:8", [("A100", 8)], False),
    ("{A100: 8}", [("A100", 8)], False),
    ("{A100:8, A100-80GB:4}", [("A100", 8), ("A100-80GB", 4)], False),
    ("{A100: 8, H100: 8}", [("A100", 8), ("H100", 8)], False),
    ("[L4, A10G]", [("L4", 1), ("A10G", 1)], True),
    ("['L4:4', {A10G: 4}]", [("L4", 4), ("A10G", 4)], True),
    ("A10:0.5", [("A10", 0.5)], False),
])
def test_accelerator_forms(tmp_path, written, expected, ordered):
    t = task(f"resources:\n  accelerators: {written}\n", tmp_path)
    choice = t.resources.accelerators
    assert choice.options == tuple(Accelerator(n, float(c)) for n, c in expected)
    assert t.resources.is_ordered is ordered


@pytest.mark.parametrize("written, quantity", [
    ("4", Quantity(4, False)), ("'4+'", Quantity(4, True)), ("4.5", Quantity(4.5, False)),
    ("'32+'", Quantity(32, True)),
])
def test_cpus_and_memory(tmp_path, written, quantity):
    t = task(f"resources:\n  cpus: {written}\n  memory: {written}\n", tmp_path)
    assert t.resources.cpus == quantity and t.resources.memory == quantity


def test_ports(tmp_path):
    t = task("resources:\n  ports: [8000, '10000-10010', '9000']\n", tmp_path)
    assert t.resources.ports == ((8000, 8000), (10000, 10010), (9000, 9000))


@pytest.mark.parametrize("infra, pins", [
    ("aws", ("aws", None, None)),
    ("aws/us-east-1", ("aws", "us-east-1", None)),
    ("gcp/us-central1/us-central1-a", ("gcp", "us-central1", "us-central1-a")),
    ("'*/us-east-1'", (None, "us-east-1", None)),
])
def test_infra(tmp_path, infra, pins):
    t = task(f"resources:\n  infra: {infra}\n", tmp_path)
    r = t.resources
    assert (r.cloud, r.region, r.zone) == pins


def test_any_of_expands_over_the_base(tmp_path):
    t = task("""
        resources:
          accelerators: A100:8
          use_spot: true
          any_of:
            - cloud: aws
            - infra: gcp/us-central1
              accelerators: H100:8
        """, tmp_path)
    reqs = t.resources.requirements_with()
    assert [(r.cloud, r.region, r.accelerator, r.use_spot) for r in reqs] == [
        ("aws", None, "A100", True), ("gcp", "us-central1", "H100", True)]
    assert not t.resources.is_ordered


def test_ordered_is_a_preference(tmp_path):
    t = task("resources:\n  ordered:\n    - accelerators: L4\n    - accelerators: T4\n", tmp_path)
    assert t.resources.is_ordered
    assert [r.accelerator for r in t.resources.requirements_with()] == ["L4", "T4"]


def test_command_line_overrides_apply_to_every_alternative(tmp_path):
    t = task("resources:\n  infra: aws\n  any_of:\n    - region: us-east-1\n    - region: us-west-2\n",
             tmp_path)
    override = ResourceFields.model_validate({"accelerators": "H100:8", "use_spot": True})
    reqs = t.resources.requirements_with(override)
    assert [(r.cloud, r.region, r.accelerator, r.use_spot) for r in reqs] == [
        ("aws", "us-east-1", "H100", True), ("aws", "us-west-2", "H100", True)]


def test_region_override_keeps_the_cloud_from_infra(tmp_path):
    t = task("resources:\n  infra: aws/us-east-1\n", tmp_path)
    reqs = t.resources.requirements_with(ResourceFields.model_validate({"region": "us-west-2"}))
    assert (reqs[0].cloud, reqs[0].region) == ("aws", "us-west-2")


def test_envs_override_from_flag_and_environment(tmp_path, monkeypatch):
    t = task("envs:\n  MODEL: qwen\n  HF_TOKEN: null\n  BATCH: 8\n", tmp_path)
    assert t.envs == {"MODEL": "qwen", "HF_TOKEN": None, "BATCH": "8"}
    with pytest.raises(SpecError, match="HF_TOKEN has no value"):
        t.check_ready()
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    ready = t.with_overrides(["MODEL=llama", "HF_TOKEN"])
    ready.check_ready()
    assert ready.envs == {"MODEL": "llama", "HF_TOKEN": "hf_secret", "BATCH": "8"}
    assert ready.source == t.source


def test_full_skypilot_task_parses_unchanged(tmp_path):
    (tmp_path / "app").mkdir()
    t = task(f"""
        name: qwen-serve
        workdir: {tmp_path / 'app'}
        num_nodes: 2
        resources:
          infra: aws/us-east-1
          accelerators: {{A100: 8}}
          cpus: 32+
          memory: 256+
          use_spot: true
          disk_size: 512
          disk_tier: best
          ports: 8000
          image_id: {{us-east-1: ami-0123}}
          job_recovery: {{strategy: EAGER_NEXT_REGION, max_restarts_on_errors: 3}}
          autostop: {{idle_minutes: 30, down: true}}
          labels: {{team: ml}}
        envs:
          MODEL: Qwen/Qwen2.5-72B-Instruct
        secrets:
          HF_TOKEN: abc
        file_mounts:
          /data: s3://bucket/data
          ~/cfg: {{source: gs://bucket/cfg, mode: COPY}}
        setup: pip install vllm
        run: vllm serve $MODEL --tensor-parallel-size $SKYPILOT_NUM_GPUS_PER_NODE
        service:
          readiness_probe:
            path: /v1/models
            initial_delay_seconds: 600
            headers: {{Authorization: Bearer x}}
          replica_policy:
            min_replicas: 1
            max_replicas: 4
            target_qps_per_replica: 2.5
            base_ondemand_fallback_replicas: 1
          load_balancing_policy: least_load
          ports: 8000
        """, tmp_path)
    t.check_ready()
    assert t.num_nodes == 2 and t.resources.autostop.idle_minutes == 30
    assert t.resources.job_recovery.max_restarts_on_errors == 3
    assert t.service.probe.path == "/v1/models"
    assert t.service.replica_policy.max_replicas == 4


def test_service_short_forms(tmp_path):
    t = task("service:\n  readiness_probe: /health\n  replicas: 2\n", tmp_path)
    assert t.service.probe.path == "/health" and t.service.replicas == 2


def test_autostop_forms():
    for written, minutes in ((True, 5), (10, 10), ("2h", 120), ("30m", 30)):
        t = task_from_mapping({"resources": {"autostop": written}}, "x.yaml")
        assert t.resources.autostop.idle_minutes == minutes


def test_runtime_section(tmp_path):
    t = task("""
        secrets:
          ENGINE_KEY: null
        runtime:
          engine: VLLM
          model: Qwen/Qwen2.5-7B-Instruct
          version: "0.11.0"
          api_key: ENGINE_KEY
          args:
            max_model_len: 8192
            --enforce-eager: true
            limit-mm-per-prompt: {image: 2}
            served-model-name: [a, b]
        """, tmp_path)
    r = t.runtime
    assert (r.engine, r.model, r.version, r.api_key) == (
        "vllm", "Qwen/Qwen2.5-7B-Instruct", "0.11.0", "ENGINE_KEY")
    # Keys keep the user's spelling (errors quote it); flags are the engine's.
    assert list(r.args) == ["max_model_len", "--enforce-eager", "limit-mm-per-prompt", "served-model-name"]
    assert r.flags == {"max-model-len": 8192, "enforce-eager": True,
                       "limit-mm-per-prompt": {"image": 2}, "served-model-name": ["a", "b"]}


def test_runtime_is_optional_and_data_only():
    t = task_from_mapping({"run": "echo", "runtime": {"engine": "no-such-engine", "model": "m"}},
                          "x.yaml")
    # The spec never loads plugins: an unknown engine is found when the task is resolved.
    assert t.runtime.engine == "no-such-engine" and t.setup is None
    assert task_from_mapping({"run": "echo"}, "x.yaml").runtime is None


@pytest.mark.parametrize("args, expected", [
    ({"x": None}, "'x' has no value"),
    ({"x": [[1]]}, "must be a list of plain values"),
    ({"a_b": 1, "a-b": 2}, "are the same flag --a-b"),
    ({"$(reboot)": 1}, "bad engine argument name"),
])
def test_runtime_args_shape(args, expected):
    with pytest.raises(SpecError, match=re.escape(expected)):
        task_from_mapping({"runtime": {"engine": "vllm", "model": "m", "args": args}}, "x.yaml")


# -- envs filled into the task, as SkyPilot does ----------------------------------------------

def test_envs_fill_workdir_file_mounts_service_and_runtime(tmp_path):
    task = task_from_mapping({
        "envs": {"MODEL": "Qwen/Qwen2-7B", "DIR": "data", "LATER": None},
        "secrets": {"TOKEN": "s3cret"},
        "workdir": "~/${DIR}",
        "file_mounts": {"/mnt/$DIR": "./$DIR", "/ckpt": {"name": "bucket-${DIR}", "mode": "MOUNT"}},
        "setup": "echo $MODEL", "run": "echo ${MODEL}",
        "service": {"readiness_probe": {"path": "/v1/chat/completions",
                                        "post_data": {"model": "$MODEL", "token": "$TOKEN",
                                                      "later": "$LATER", "price": "$5 or $$"}},
                    "replicas": 1},
        "runtime": {"engine": "vllm", "model": "${MODEL}"},
    }, "t.yaml").with_overrides()
    assert task.workdir == "~/data"
    assert task.file_mounts["/mnt/data"] == "./data"
    assert (task.file_mounts["/ckpt"].name, task.file_mounts["/ckpt"].mode) == ("bucket-data", "MOUNT")
    # The shell expands setup and run on the node; secrets never land in records;
    # unset and unknown names and lone dollars stay as written.
    assert (task.setup, task.run) == ("echo $MODEL", "echo ${MODEL}")
    assert task.service.readiness_probe.post_data == {
        "model": "Qwen/Qwen2-7B", "token": "$TOKEN", "later": "$LATER", "price": "$5 or $$"}
    assert task.runtime.model == "Qwen/Qwen2-7B"


def test_env_overrides_win_before_filling():
    task = task_from_mapping({"envs": {"MODEL": "a"}, "workdir": "/w/$MODEL", "run": "true"},
                             "t.yaml").with_overrides(["MODEL=b"])
    assert (task.envs["MODEL"], task.workdir) == ("b", "/w/b")

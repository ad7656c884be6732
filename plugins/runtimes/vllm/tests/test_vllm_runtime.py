"""The vLLM runtime proves itself with skyk's runtime contract, plus vLLM's own spellings."""

from __future__ import annotations

from pathlib import Path

from skyk.runtime.resolve import resolve_task
from skyk.testing import RuntimePluginContract

README = Path(__file__).resolve().parents[1] / "README.md"


class TestVLLMRuntime(RuntimePluginContract):
    runtime_name = "vllm"
    readme = README
    distribution = "skyk-vllm"
    engine_title = "vLLM"
    engine_program = "vllm"
    expected_readiness_path = "/health"
    expected_queue_metrics = ("vllm:num_requests_waiting",)

    def expected_setup(self, version):
        return ["python", "-m", "pip", "install", f"vllm=={version}"]

    def expected_serve_argv(self, *, model, port, gpus, api_key):
        argv = ["vllm", "serve", model, "--host", "0.0.0.0", "--port", str(port),
                "--tensor-parallel-size", str(gpus), "--served-model-name", model]
        return argv + (["--api-key", api_key] if api_key else [])

    def test_false_switches_a_flag_off(self, shell):
        args = {"enable_prefix_caching": False, "enforce_eager": True}
        argv = shell(resolve_task(self.task(runtime_fields={"args": args})).run)
        assert argv[-2:] == ["--no-enable-prefix-caching", "--enforce-eager"]

    def test_token_counts_take_vllms_short_form(self, shell):
        argv = shell(resolve_task(self.task(runtime_fields={"args": {"max_model_len": "32k"}})).run)
        assert argv[-2:] == ["--max-model-len", "32k"]

    def test_served_model_name_from_args_replaces_the_default(self, shell):
        args = {"served-model-name": ["qwen", "default"]}
        argv = shell(resolve_task(self.task(runtime_fields={"args": args})).run)
        assert argv.count("--served-model-name") == 1
        assert argv[-3:] == ["--served-model-name", "qwen", "default"]

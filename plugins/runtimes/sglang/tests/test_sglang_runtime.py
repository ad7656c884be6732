"""The SGLang runtime proves itself with skyk's runtime contract, plus SGLang's own spellings."""

from __future__ import annotations

from pathlib import Path

from skyk.runtime.resolve import resolve_task
from skyk.testing import RuntimePluginContract

README = Path(__file__).resolve().parents[1] / "README.md"


class TestSGLangRuntime(RuntimePluginContract):
    runtime_name = "sglang"
    readme = README
    distribution = "skyk-sglang"
    engine_title = "SGLang"
    engine_program = "python"
    expected_readiness_path = "/health_generate"
    expected_queue_metrics = ("sglang:num_queue_reqs",)

    def expected_setup(self, version):
        return ["python", "-m", "pip", "install", f"sglang[all]=={version}"]

    def expected_serve_argv(self, *, model, port, gpus, api_key):
        argv = ["python", "-m", "sglang.launch_server", "--model-path", model, "--host", "0.0.0.0",
                "--port", str(port), "--tp-size", str(gpus), "--served-model-name", model]
        # /metrics is off in SGLang unless asked for; skyk always asks.
        return argv + (["--api-key", api_key] if api_key else []) + ["--enable-metrics"]

    def test_false_leaves_a_switch_out(self, shell):
        args = {"disable_radix_cache": False, "enable_torch_compile": True}
        argv = shell(resolve_task(self.task(runtime_fields={"args": args})).run)
        assert "--disable-radix-cache" not in argv and "--no-disable-radix-cache" not in argv
        assert argv[-1] == "--enable-torch-compile"

    def test_chunked_prefill_can_be_turned_off(self, shell):
        argv = shell(resolve_task(self.task(runtime_fields={"args": {"chunked_prefill_size": -1}})).run)
        assert argv[-2:] == ["--chunked-prefill-size", "-1"]

    def test_one_served_model_name_only(self):
        line = self.rejection(runtime_fields={"args": {"served_model_name": ["a", "b"]}})
        assert "expects one string" in line

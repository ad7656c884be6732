"""Tests of the vLLM and SGLang runtimes: their commands and their registration."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from skyk.runtime import Runtime, RuntimeRecipe
from skyk_sglang.runtime import SGLangRuntime
from skyk_vllm.runtime import VLLMRuntime

RUNTIMES = [VLLMRuntime, SGLangRuntime]


@pytest.fixture(autouse=True)
def no_plugin_blocks(monkeypatch):
    """A developer's SKYK_DISABLE_PLUGINS would hide the runtimes under test."""
    monkeypatch.delenv("SKYK_DISABLE_PLUGINS", raising=False)


def words(command: str) -> list[str]:
    """Split a command the way a POSIX shell would (before expansions)."""
    return shlex.split(command)


def value_after(argv: list[str], flag: str) -> str:
    """Return the word following ``flag``; fails the test when the flag is absent."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


# ------------------------------------------------------------------- vLLM


def test_vllm_attributes():
    runtime = VLLMRuntime()
    assert isinstance(runtime, Runtime)
    assert runtime.name == "vllm"
    assert runtime.readiness_path == "/health"
    assert runtime.queue_length_metric == "vllm:num_requests_waiting"


def test_vllm_setup_installs_vllm():
    assert words(VLLMRuntime().setup_command(RuntimeRecipe(model="m"))) == [
        "pip", "install", "vllm"]


def test_vllm_serve_command_flags():
    command = VLLMRuntime().serve_command(RuntimeRecipe(model="meta-llama/Llama-3.1-8B", port=8123))
    argv = words(command)
    assert argv[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert value_after(argv, "--model") == "meta-llama/Llama-3.1-8B"
    assert value_after(argv, "--host") == "0.0.0.0"
    assert value_after(argv, "--port") == "8123"
    # Left for the node's shell to expand, not resolved at build time.
    assert "--tensor-parallel-size ${SKYK_NUM_GPUS_PER_NODE:-1}" in command
    assert command.endswith("${SKYK_NUM_GPUS_PER_NODE:-1}")


def test_vllm_engine_args_rendered():
    recipe = RuntimeRecipe(model="m", engine_args={
        "max_model_len": 4096, "gpu_memory_utilization": 0.9,
        "enforce_eager": True, "disable_log_stats": False, "served_model_name": "my model"})
    argv = words(VLLMRuntime().serve_command(recipe))
    assert value_after(argv, "--max-model-len") == "4096"
    assert value_after(argv, "--gpu-memory-utilization") == "0.9"
    assert value_after(argv, "--served-model-name") == "my model"
    assert "--enforce-eager" in argv
    assert "--disable-log-stats" not in argv


# ----------------------------------------------------------------- SGLang


def test_sglang_attributes():
    runtime = SGLangRuntime()
    assert isinstance(runtime, Runtime)
    assert runtime.name == "sglang"
    assert runtime.readiness_path == "/health"
    assert runtime.queue_length_metric == "sglang:num_queue_reqs"


def test_sglang_setup_quotes_extra():
    command = SGLangRuntime().setup_command(RuntimeRecipe(model="m"))
    assert words(command) == ["pip", "install", "sglang[all]"]
    # Unquoted brackets would be a glob to the shell.
    assert " sglang[all]" not in command


def test_sglang_serve_command_flags():
    command = SGLangRuntime().serve_command(RuntimeRecipe(model="Qwen/Qwen2.5-7B", port=30000))
    argv = words(command)
    assert argv[:3] == ["python", "-m", "sglang.launch_server"]
    assert value_after(argv, "--model-path") == "Qwen/Qwen2.5-7B"
    assert value_after(argv, "--host") == "0.0.0.0"
    assert value_after(argv, "--port") == "30000"
    assert "--tp ${SKYK_NUM_GPUS_PER_NODE:-1}" in command
    assert command.endswith("${SKYK_NUM_GPUS_PER_NODE:-1}")


def test_sglang_engine_args_rendered():
    recipe = RuntimeRecipe(model="m", engine_args={"mem_fraction_static": 0.8,
                                                   "enable_torch_compile": True})
    argv = words(SGLangRuntime().serve_command(recipe))
    assert value_after(argv, "--mem-fraction-static") == "0.8"
    assert argv[-1] == "--enable-torch-compile"


# ----------------------------------------------------------------- both


@pytest.mark.parametrize("runtime_cls", RUNTIMES)
@pytest.mark.parametrize("model", ["my model", "x; rm -rf /", "$(reboot)", "it's"])
def test_model_is_quoted(runtime_cls, model):
    command = runtime_cls().serve_command(RuntimeRecipe(model=model))
    argv = words(command)
    flag = "--model" if runtime_cls is VLLMRuntime else "--model-path"
    # The shell sees the whole name as one word and nothing of it as syntax.
    assert value_after(argv, flag) == model
    assert shlex.quote(model) in command


@pytest.mark.parametrize("runtime_cls", RUNTIMES)
def test_no_engine_args_no_trailing_space(runtime_cls):
    command = runtime_cls().serve_command(RuntimeRecipe(model="m"))
    assert command == command.strip()
    assert "  " not in command


def test_plugin_import_does_not_import_engines():
    # Listing plugins must stay cheap: the engines (and torch) live on the node.
    code = ("import sys, skyk_vllm.plugin, skyk_sglang.plugin; "
            "bad = [m for m in ('vllm', 'sglang', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------ registration


def test_kernel_finds_both_runtimes():
    from skyk.plugins.manager import Kernel

    kernel = Kernel.load(("runtime",))
    assert kernel.failures == []
    runtimes = kernel.runtimes()
    assert {"vllm", "sglang"} <= set(runtimes)
    assert isinstance(runtimes["vllm"], VLLMRuntime)
    assert isinstance(runtimes["sglang"], SGLangRuntime)


def test_runtime_can_be_blocked(monkeypatch):
    from skyk.plugins.manager import Kernel

    monkeypatch.setenv("SKYK_DISABLE_PLUGINS", "vllm")
    runtimes = Kernel.load(("runtime",)).runtimes()
    assert "vllm" not in runtimes
    assert "sglang" in runtimes


def test_skyk_plugins_lists_runtimes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SKYK_DISABLE_PLUGINS"}
    env["HOME"] = str(tmp_path)
    env["SKYK_HOME"] = str(tmp_path / ".skyk")
    result = subprocess.run([sys.executable, "-m", "skyk", "plugins", "-o", "json"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for name in ("vllm", "sglang"):
        row = rows[("runtime", name)]
        assert row["distribution"] == "skyk-runtimes"
        assert row["status"] == "ok"


def test_skyk_plugins_table_lists_runtimes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SKYK_DISABLE_PLUGINS"}
    env["HOME"] = str(tmp_path)
    env["SKYK_HOME"] = str(tmp_path / ".skyk")
    result = subprocess.run([sys.executable, "-m", "skyk", "plugins"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    for name in ("vllm", "sglang"):
        assert ["runtime", name, "skyk-runtimes", "0.1.0", "ok"] in rows

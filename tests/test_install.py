"""``pip install ./core`` alone gives a working ``skyk`` with only the local cloud."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: A fresh venv as a user has it: without the test suite's own plugins (conftest.PLUGIN_SITE).
USER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
def test_core_alone_plans_and_runs_on_the_local_cloud(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                          str(REPO / "core")], capture_output=True, text=True, timeout=600, env=USER_ENV)
    assert pip.returncode == 0, pip.stderr
    skyk = venv / "bin" / "skyk"
    plugins = json.loads(subprocess.run([str(skyk), "plugins", "-o", "json"], capture_output=True,
                                        text=True, check=True, env=USER_ENV).stdout)
    assert {p["name"] for p in plugins if p["kind"] == "cloud"} == {"local"}
    result = subprocess.run([str(skyk), "launch", "--dryrun", str(REPO / "examples" / "hello.yaml"),
                             "-o", "json"], capture_output=True, text=True, cwd=tmp_path, env=USER_ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["chosen"]["cloud"] == "local"

    # The README's main job: a real launch from the installed (not editable) package.
    launched = subprocess.run([str(skyk), "launch", "-c", "hello", str(REPO / "examples" / "hello.yaml")],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120, env=USER_ENV)
    assert launched.returncode == 0, launched.stderr
    assert "setting up" in launched.stdout and "hello from 0" in launched.stdout
    down = subprocess.run([str(skyk), "down", "hello", "-y"], capture_output=True, text=True, timeout=120, env=USER_ENV)
    assert down.returncode == 0, down.stderr


@pytest.mark.slow
def test_one_runtime_plugin_installs_without_the_other(tmp_path):
    """``pip install ./core ./plugins/runtimes/vllm``: vLLM recipes work, SGLang ones say what is missing."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                          str(REPO / "core"), str(REPO / "plugins" / "runtimes" / "vllm")],
                         capture_output=True, text=True, timeout=600, env=USER_ENV)
    assert pip.returncode == 0, pip.stderr
    skyk = venv / "bin" / "skyk"
    plugins = json.loads(subprocess.run([str(skyk), "plugins", "-o", "json"], capture_output=True,
                                        text=True, check=True, env=USER_ENV).stdout)
    assert {p["name"] for p in plugins if p["kind"] == "runtime"} == {"vllm"}

    recipe = tmp_path / "chat.yaml"
    for engine in ("vllm", "sglang"):
        recipe.write_text(f"runtime:\n  engine: {engine}\n  model: Qwen/Qwen2.5-7B-Instruct\n"
                          "resources:\n  cpus: 2+\n  cloud: local\n")
        result = subprocess.run([str(skyk), "launch", "--dryrun", str(recipe)], capture_output=True,
                                text=True, cwd=tmp_path, env=USER_ENV)
        if engine == "vllm":
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0 and "Traceback" not in result.stderr
            assert "no runtime named 'sglang'" in result.stderr
            assert "installed runtimes: vllm;" in result.stderr

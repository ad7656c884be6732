"""``pip install ./core`` alone gives a working ``skyk`` with only the local cloud."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_core_alone_plans_and_runs_on_the_local_cloud(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                          str(REPO / "core")], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    skyk = venv / "bin" / "skyk"
    plugins = json.loads(subprocess.run([str(skyk), "plugins", "-o", "json"], capture_output=True,
                                        text=True, check=True).stdout)
    assert {p["name"] for p in plugins if p["kind"] == "cloud"} == {"local"}
    result = subprocess.run([str(skyk), "launch", "--dryrun", str(REPO / "examples" / "hello.yaml"),
                             "-o", "json"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["chosen"]["cloud"] == "local"

    # The README's main job: a real launch from the installed (not editable) package.
    launched = subprocess.run([str(skyk), "launch", "-c", "hello", str(REPO / "examples" / "hello.yaml")],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert launched.returncode == 0, launched.stderr
    assert "setting up" in launched.stdout and "hello from 0" in launched.stdout
    down = subprocess.run([str(skyk), "down", "hello", "-y"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr

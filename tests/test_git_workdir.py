"""``workdir: {url, ref}`` (SkyPilot's git workdir): the nodes clone the repository
into the workdir location and check out the ref, instead of syncing a local folder."""

from __future__ import annotations

import json
import subprocess

import pytest
from lifecycle_helpers import down_everything
from skyk.spec.task import task_from_mapping
from skyk.spec.workdir import GitWorkdir


def _git(*args: str, cwd) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path) -> str:
    """A bare repository (file:// URL) whose main branch says one and dev branch two."""
    src = tmp_path / "src"
    src.mkdir()
    _git("init", "-q", "-b", "main", cwd=src)
    (src / "f.txt").write_text("one\n")
    _git("add", "f.txt", cwd=src)
    _git("commit", "-qm", "one", cwd=src)
    _git("checkout", "-qb", "dev", cwd=src)
    (src / "f.txt").write_text("two\n")
    _git("commit", "-qam", "two", cwd=src)
    _git("checkout", "-q", "main", cwd=src)
    _git("clone", "-q", "--bare", str(src), str(tmp_path / "repo.git"), cwd=tmp_path)
    return f"file://{tmp_path / 'repo.git'}"


@pytest.fixture
def cli(skyk, isolated_home):
    yield skyk
    down_everything(skyk, isolated_home)


def test_the_dry_run_shows_the_repository(skyk, tmp_path, repo):
    task = tmp_path / "task.yaml"
    task.write_text(f"workdir:\n  url: {repo}\n  ref: dev\nrun: cat f.txt\n")
    result = skyk("launch", "--dryrun", "--cloud", "local", str(task))
    assert result.returncode == 0, result.stderr
    assert f"Workdir: each node clones {repo}@dev into ~/sky_workdir" in result.stdout
    result = skyk("launch", "--dryrun", "--cloud", "local", str(task), "-o", "json")
    assert json.loads(result.stdout)["workdir"] == {"url": repo, "ref": "dev"}


def test_nodes_clone_the_ref_into_the_workdir(cli, tmp_path, repo):
    task = tmp_path / "task.yaml"
    task.write_text(f"workdir:\n  url: {repo}\n  ref: dev\nrun: cat f.txt; git rev-parse --abbrev-ref HEAD\n")
    result = cli("launch", "-c", "git", "--cloud", "local", "--num-nodes", "2", str(task), "-y",
                 timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("two") == 2 and result.stdout.count("dev") >= 2
    # No ref: the default branch. A ref that does not exist fails in one line and
    # leaves the clone that was there.
    task.write_text(f"workdir: {{url: {repo}}}\nrun: cat f.txt\n")
    result = cli("launch", "-c", "git", str(task), "-y", timeout=120)
    assert result.returncode == 0 and "one" in result.stdout, result.stderr
    task.write_text(f"workdir: {{url: {repo}, ref: nope}}\nrun: cat f.txt\n")
    result = cli("launch", "-c", "git", str(task), "-y", timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"skyk: error: {task}: workdir: cloning {repo}@nope on git failed:")
    assert "one" in cli("exec", "git", "cat f.txt", timeout=120).stdout


def test_envs_fill_the_url_and_ref():
    task = task_from_mapping({"envs": {"REF": "v1"}, "workdir": {"url": "https://example.com/r.git",
                                                                 "ref": "$REF"}}, "t.yaml")
    assert task.with_overrides().workdir == GitWorkdir(url="https://example.com/r.git", ref="v1")
    assert task.local_workdir is None

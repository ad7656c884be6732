"""Task YAML that is big, clever or hostile: merge keys work, aliases and echoed values are bounded.

Each test runs the real ``skyk`` CLI. The one-line error cases of issue 11
live in ``test_bad_input.py``; these need more than one line of checking.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

#: The address space a CLI run may use in these tests: a bounded run needs far less.
MEMORY_LIMIT = 2 * 1024**3


def test_merge_keys_are_accepted_as_in_skypilot(skyk, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text(
        "resources:\n"
        "  ordered:\n"
        "    - &base {infra: aws, cpus: 2, memory: 8}\n"
        "    - <<: *base\n"
        "      infra: gcp\n"
        "run: echo hi\n")
    result = skyk("launch", "--dryrun", str(task), "-o", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["chosen"]["cloud"] == "aws"
    # The merged entry keeps cpus and memory and takes its own infra.
    gcp = [c for c in plan["best_per_cloud"] if c["cloud"] == "gcp"]
    assert gcp and gcp[0]["vcpus"] == 2 and gcp[0]["memory_gib"] == 8


def test_merge_key_does_not_hide_a_key_written_twice(skyk, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("resources:\n  any_of:\n    - &a {cpus: 2}\n"
                    "    - {<<: *a, cpus: 4, cpus: 8}\nrun: echo\n")
    result = skyk("launch", "--dryrun", str(task))
    assert result.returncode != 0
    assert "appears twice" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _bomb(levels: int) -> str:
    """A 'billion laughs' task: each level repeats the one above nine times."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for index in range(1, levels):
        name, above = chr(ord("a") + index), chr(ord("a") + index - 1)
        lines.append(f"{name}: &{name} [{','.join(['*' + above] * 9)}]")
    body = "\n".join("      " + line for line in lines)
    return f"service:\n  readiness_probe:\n    path: /\n    post_data:\n{body}\nrun: echo\n"


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_alias_bomb_is_refused_within_bounded_memory(tmp_path, shared_catalogs):
    task = tmp_path / "task.yaml"
    task.write_text(_bomb(9))  # 9**9 strings, about 390 million, from well under 1 KB
    assert task.stat().st_size < 1024
    env = {**os.environ, "SKYK_CATALOG_DIR": str(shared_catalogs)}
    # Unbounded, filling envs expands the aliases: gigabytes and minutes, or MemoryError here.
    result = subprocess.run([sys.executable, "-m", "skyk", "launch", "--dryrun", str(task)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                            preexec_fn=_limited)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "aliases" in lines[0] and "hint:" in lines[0], result.stderr


def test_error_lines_are_shortened_and_escaped(skyk, tmp_path):
    region = "r" * 1_000_000
    task = tmp_path / "task.yaml"
    task.write_text(f'resources:\n  cloud: aws\n  region: "{region}\\e[31mred"\nrun: echo\n')
    result = skyk("launch", "--dryrun", str(task))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[:2000]
    line = lines[0]
    assert len(line) < 2000, f"{len(line)} characters"
    assert "\x1b" not in result.stderr, "a raw escape sequence reached the terminal"
    assert "\\x1b[31mred" in line and "characters left out" in line and "hint:" in line


def test_argparse_errors_are_escaped_too(skyk):
    result = skyk("status", "--output", "\x1b]0;owned\x07" + "x" * 5000)
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and "\\x1b" in result.stderr
    assert len(result.stderr) < 2000


def test_bad_numbers_for_a_running_cluster_are_one_line(skyk, isolated_home):
    from lifecycle_helpers import node_processes, sandboxes

    try:
        launched = skyk("launch", "-c", "nums", "echo hi", "-y")
        assert launched.returncode == 0, launched.stderr
        # Before, the agent's SQLite or its own check answered, as if the cluster were at fault.
        for args, expect in (
                (("cancel", "nums", str(2**64)), "job id"), (("logs", "nums", str(2**63)), "job id"),
                (("logs", "nums", "1" * 5000), "job id"), (("autostop", "nums", "-i", "nan"), "nan"),
                (("autostop", "nums", "-i", "1e400"), "at most"),
                (("status", "--endpoint", "²", "nums"), "port must be a number"),
                (("status", "--endpoint", "8000-8001", "nums"), "port must be a number")):
            result = skyk(*args)
            lines = result.stderr.strip().splitlines()
            shown = f"skyk {' '.join(args)[:200]}: rc={result.returncode}\n{result.stderr}"
            assert result.returncode == 2 and len(lines) == 1, shown
            assert expect in lines[0] and "hint:" in lines[0], shown
            assert "internal error" not in lines[0] and "cluster nums" not in lines[0], shown
        queue = skyk("queue", "nums", "-o", "json")
        assert queue.returncode == 0 and json.loads(queue.stdout)["nums"][0]["id"] == 1
    finally:
        skyk("down", "-a", "-y", "--purge")
    assert node_processes() == {} and sandboxes(isolated_home) == []

"""Generated task YAMLs and command lines: skyk accepts each, or answers one line with a hint.

Hypothesis builds task files (valid fields, hostile values, tags, aliases,
merge keys) and command lines (flags with numbers, nan, huge integers,
control characters). Each runs through ``skyk.cli.main.main``, the entry
the ``skyk`` command itself calls, with ``launch --dryrun`` planning against
the real catalogs; a smaller number run as real ``skyk`` subprocesses. Every
run must exit 0, or exit non-zero with exactly one stderr line that carries a
hint and is no "internal error", within bounded time and memory.

The runs are derandomized with fixed example counts, so CI sees the same
inputs every time, in about a minute on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import time

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

#: The longest one run may take: planning takes about a second; unbounded work took minutes.
RUN_SECONDS = 30
#: The most memory (max RSS) the test process may reach; an alias bomb took 2.4 GB.
MAX_RSS_BYTES = 1536 * 1024**2

COMMON = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow, HealthCheck.data_too_large])

# --- values ---------------------------------------------------------------------------

_WEIRD_TEXT = st.sampled_from([
    "", " ", "nan", "inf", "-1", "0", "1e400", "²", "٣", "A100:nan", "A100:inf", "A100:-1",
    "aws/us-east-1", "awz", "*", "a/b/c/d", "~nosuchuser/x", "~", "/" + "n" * 300, "x\x00y",
    "\x1b[31mred", "1" * 5000, "8+", "4+", "10000-10010", "65536", "8000-7000", "30m", "2h",
    "1d", "99999999999999999999h", "$HOME", "${MODEL}", "é" * 200, "A100:8", "L4", "H100:3",
])
_TEXT = st.one_of(_WEIRD_TEXT, st.text(max_size=20))
_NUMBER = st.one_of(
    st.integers(min_value=-3, max_value=70000),
    st.sampled_from([2**63, 2**64, 10**400, 18446744073709551616]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_SCALAR = st.one_of(_NUMBER, _TEXT, st.booleans(), st.none())
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)), max_leaves=6)
_CLOUD = st.sampled_from(["aws", "gcp", "azure", "local", "awz", "gpc", "AWS", "nosuch"])
_ACCELERATORS = st.one_of(
    st.sampled_from(["A100:8", "L4", "T4:1", "H100:8", "A10G:4", "A100:nan", "A100:1e400"]),
    st.dictionaries(st.sampled_from(["A100", "L4", "T4", "a100"]), _NUMBER, max_size=2),
    st.lists(st.sampled_from(["L4", "T4:1", "A10G", "H100:3"]), max_size=3),
    _VALUE,
)


def _mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values three times in four, so plans are reached, and hostile ones the rest."""
    return st.integers(0, 3).flatmap(lambda pick: hostile if pick == 3 else valid)


def _resource_fields() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={
        "cloud": _mostly(st.sampled_from(["aws", "gcp", "azure", "local"]), st.one_of(_CLOUD, _VALUE)),
        "region": _mostly(st.sampled_from(["us-east-1", "us-central1", "eastus"]), _TEXT),
        "accelerators": _mostly(st.sampled_from(["A100:8", "L4", "T4:1", {"A100": 8, "H100": 8}]),
                                _ACCELERATORS),
        "cpus": _mostly(st.sampled_from([2, 4, "4+", 8, "8+"]), st.one_of(_NUMBER, _TEXT)),
        "memory": _mostly(st.sampled_from([8, 16, "16+", 32.5]), st.one_of(_NUMBER, _TEXT)),
        "use_spot": _mostly(st.booleans(), _VALUE),
        "ports": _mostly(st.sampled_from([8000, "8000-8010", [8080, 9000]]),
                         st.one_of(_NUMBER, _TEXT, st.lists(st.one_of(_NUMBER, _TEXT), max_size=3))),
        "autostop": _mostly(st.sampled_from([10, "1h", True, {"idle_minutes": 5, "down": True}]),
                            st.one_of(_NUMBER, _TEXT, _VALUE)),
        "disk_size": _mostly(st.just(100), _NUMBER),
        "max_hourly_cost": _mostly(st.just(100.0), _NUMBER),
        "infra": _TEXT, "instance_type": _TEXT,
    })


_RESOURCES = st.builds(
    lambda fields, alternatives, key: {**fields, **({key: alternatives} if alternatives else {})},
    _resource_fields(), st.lists(_resource_fields(), max_size=2), st.sampled_from(["any_of", "ordered"]))

_TASK = st.fixed_dictionaries({}, optional={
    "name": _mostly(st.sampled_from(["job", "train-1", "a.b"]), _TEXT),
    "num_nodes": _mostly(st.integers(1, 4), _NUMBER),
    "resources": _mostly(_RESOURCES, _VALUE),
    "envs": st.dictionaries(_mostly(st.sampled_from(["A", "MODEL"]), _TEXT),
                            _mostly(st.just("1"), st.one_of(_TEXT, _NUMBER, st.none())), max_size=2),
    "run": _mostly(st.just("echo hi"), _TEXT), "setup": _mostly(st.just("echo setup"), _TEXT),
    "workdir": _mostly(st.just("."), _TEXT),
    "file_mounts": st.dictionaries(_mostly(st.just("/data"), _TEXT), _mostly(st.just("."), _TEXT),
                                   max_size=2),
    "service": st.fixed_dictionaries({}, optional={
        "readiness_probe": st.one_of(_TEXT, st.fixed_dictionaries(
            {"path": st.sampled_from(["/", "/health", "health"])},
            optional={"post_data": _VALUE})),
        "replicas": _mostly(st.integers(1, 3), _NUMBER)}),
})

#: Raw YAML snippets no mapping dumps to: tags, aliases, merge keys, bombs.
_SNIPPETS = st.sampled_from([
    "resources:\n  cpus: !!float abc\n", "resources:\n  use_spot: !!bool maybe\n",
    "resources: !!map [1]\n", "num_nodes: !!int " + "9" * 5000 + "\n",
    "resources:\n  any_of:\n    - &a {cpus: 2}\n    - {<<: *a, memory: 8}\n",
    "resources: &r {cpus: 2}\nrun: echo\nservice:\n  readiness_probe: {path: /, post_data: *r}\n",
    "service:\n  readiness_probe:\n    path: /\n    post_data: &p [*p]\n",
    "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
    'run: "echo \\0"\n', "run: echo\n---\nrun: again\n", "\t- x\n", "[1, 2]\n", "", "{{{\n",
    "resources:\n  <<: {cpus: 2}\n  <<: {cpus: 4}\n", "num_nodes: .nan\n", "num_nodes: 1e400\n",
    "bogus_field: 1\n", "resources:\n  cloud: aws\n  any_of:\n    - {cpus: 2}\n    - {cloud: awz}\n",
])


def _dump(task: dict) -> str:
    return yaml.safe_dump(task, allow_unicode=True, default_flow_style=False)


_YAML = st.one_of(_TASK.map(_dump), _SNIPPETS,
                  st.tuples(_SNIPPETS, _TASK.map(_dump)).map(lambda pair: pair[0] + pair[1]))

# --- command lines ---------------------------------------------------------------------

_FLAG_VALUE = st.one_of(_WEIRD_TEXT, st.text(max_size=12),
                        _NUMBER.map(lambda n: str(n) if not isinstance(n, int) or n < 10**30 else "9" * 400))
_LAUNCH_FLAGS = st.lists(st.tuples(st.sampled_from([
    "--gpus", "--cpus", "--memory", "--num-nodes", "-i", "--cloud", "--region", "--infra",
    "--max-hourly-cost", "--instance-type", "--env", "-c",
]), _FLAG_VALUE).map(list), max_size=3)
_COMMAND = st.one_of(
    _LAUNCH_FLAGS.map(lambda flags: ["launch", "--dryrun", "echo hi", *[x for f in flags for x in f]]),
    _FLAG_VALUE.map(lambda v: ["show-gpus", v]),
    st.tuples(_FLAG_VALUE, _FLAG_VALUE).map(lambda pv: ["status", "--endpoint", *pv]),
    _FLAG_VALUE.map(lambda v: ["cancel", "c1", v]),
    _FLAG_VALUE.map(lambda v: ["logs", "c1", v]),
    _FLAG_VALUE.map(lambda v: ["autostop", "c1", "-i", v]),
    _FLAG_VALUE.map(lambda v: ["catalog", "refresh", "--source", v, "--cloud", "nosuch"]),
    _FLAG_VALUE.map(lambda v: ["status", v]),
    _FLAG_VALUE.map(lambda v: ["down", v, "-y"]),
)

# --- checks ----------------------------------------------------------------------------


def _check(args: list[str], code: int | None, stderr: str, seconds: float) -> None:
    shown = f"skyk {json.dumps(args)[:2000]}\nexit {code} after {seconds:.1f}s\nstderr: {stderr[:2000]}"
    assert seconds < RUN_SECONDS, shown
    assert "internal error" not in stderr and "Traceback" not in stderr, shown
    if code in (0, None):
        return
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, shown
    assert "hint:" in lines[0] or "did you mean" in lines[0], shown
    assert len(lines[0]) < 2000 and "\x1b" not in lines[0], shown


def _in_process(args: list[str]) -> None:
    """Run ``skyk ARGS`` through the CLI's own entry, in this process."""
    from skyk.cli.main import main

    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    _check(args, code, err.getvalue(), time.monotonic() - start)


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture
def cli_env(shared_catalogs, monkeypatch, tmp_path):
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(shared_catalogs))
    # A refresh that escaped its checks would go here, to a loopback port nobody serves.
    monkeypatch.setenv("SKYK_CATALOG_SOURCE", "http://127.0.0.1:9/unreachable")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@settings(COMMON, max_examples=150)
@given(text=_YAML)
@example(text="resources:\n  cpus: !!float abc\n")
def test_generated_task_yaml(cli_env, text):
    task = cli_env / "task.yaml"
    task.write_text(text, encoding="utf-8", errors="surrogatepass")
    _in_process(["launch", "--dryrun", str(task)])
    assert _max_rss_bytes() < MAX_RSS_BYTES


@settings(COMMON, max_examples=200)
@given(args=_COMMAND)
@example(args=["status", "--endpoint", "²", "c1"])  # issue 11's finds, always tried
@example(args=["launch", "--dryrun", "echo hi", "--gpus", "A100:nan", "-i", "nan"])
@example(args=["catalog", "refresh", "--source", "", "--cloud", "aws"])
def test_generated_command_lines(cli_env, args):
    _in_process(args)
    assert _max_rss_bytes() < MAX_RSS_BYTES


_ARGV_SAFE = st.one_of(_TASK.map(_dump), _SNIPPETS)


@settings(COMMON, max_examples=10)
@given(text=_ARGV_SAFE, args=_COMMAND)
def test_generated_input_through_the_real_command(skyk, cli_env, text, args):
    # An argv string cannot hold NUL or lone surrogates; the file can hold anything.
    args = [a.replace("\x00", "").encode("utf-8", "replace").decode() for a in args]
    task = cli_env / "task.yaml"
    task.write_text(text, encoding="utf-8", errors="surrogatepass")
    for argv in (["launch", "--dryrun", str(task)], args):
        start = time.monotonic()
        result = skyk(*argv, cwd=cli_env, timeout=RUN_SECONDS * 2,
                      env={"SKYK_CATALOG_SOURCE": "http://127.0.0.1:9/unreachable"})
        _check(argv, result.returncode, result.stderr, time.monotonic() - start)


def test_the_strategies_reach_the_planner(cli_env):
    # Guard against generators that only ever produce errors: valid tasks do plan.
    text = _dump({"resources": {"cloud": "aws", "cpus": 2}, "run": "echo"})
    (cli_env / "ok.yaml").write_text(text)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        from skyk.cli.main import main

        assert main(["launch", "--dryrun", str(cli_env / "ok.yaml")]) == 0
    assert "Considered" in out.getvalue()

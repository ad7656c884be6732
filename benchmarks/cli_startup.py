"""Benchmark skyk CLI start-up against bare interpreter start-up.

Usage: python benchmarks/cli_startup.py [--runs N] [--json]

Each command runs as a fresh process of the active interpreter (``sys.executable``);
its wall time is taken with ``time.perf_counter`` around ``subprocess.run``. Commands
are interleaved round-robin so that machine noise hits them all alike, after two
uncounted warm-up rounds. The parsed-catalog cache lives in a directory of the run's
own: warm for every command but ``cold``, which empties it before each run. Exit
status: 0 when every target is met, 1 when one is missed, 2 when a command fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Real AWS/GCP/Azure catalogs, kept beside the repository (../shared/catalogs).
CATALOGS = REPO.parent / "shared" / "catalogs"
WARMUP_ROUNDS = 2
#: Median wall time (seconds) each command must stay under.
TARGETS = {"launch --dryrun": 0.15, "show-gpus A100": 0.15, "dryrun any_of(100)": 0.3,
           "--help": 0.2, "jobs queue (100 jobs)": 0.2}
#: managed jobs in the state database that ``jobs queue`` lists
QUEUED_JOBS = 100
TASK_YAML = "resources:\n  accelerators: A100:8\n"
#: What every planning command imports before skyk's own code: the floor under them.
LIBRARIES = "from pydantic import BaseModel; import yaml, stevedore, pluggy"
_ANY_OF_ACCELERATORS = ("A100:8", "A100-80GB:8", "H100:8", "L4:1", "L4:4", "T4:1", "T4:4",
                        "V100:8", "A10G:1", "L40S:4")
_ANY_OF_PLACES = ("aws/us-east-1", "aws/us-east-2", "aws/us-west-2", "aws/eu-west-1",
                  "gcp/us-central1", "gcp/europe-west4", "gcp/asia-east1",
                  "azure/eastus", "azure/westus2", "azure/westeurope")


def any_of_yaml() -> str:
    """Return a task whose ``any_of`` has 100 alternatives: 10 accelerator sets in 10 places."""
    lines = ["resources:", "  any_of:"]
    lines += [f"    - {{accelerators: '{acc}', infra: {place}}}"
              for acc in _ANY_OF_ACCELERATORS for place in _ANY_OF_PLACES]
    return "\n".join(lines) + "\n"


def skyk_argv() -> list[str]:
    """Return how to start skyk: the venv's console script (what users run), else ``-m skyk``."""
    # shutil.which also finds skyk.exe on Windows, where scripts carry an extension.
    script = shutil.which("skyk", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "skyk"]


def commands(tasks: Path) -> dict[str, list[str]]:
    """Return the benchmarked commands by label; ``baseline`` is interpreter start-up.

    ``tasks`` is a directory holding ``task.yaml`` (``A100:8``) and ``any_of.yaml``.
    """
    skyk = skyk_argv()
    dry_run = [*skyk, "launch", "--dryrun", str(tasks / "task.yaml")]
    return {
        "baseline": [sys.executable, "-c", "pass"],
        "libraries": [sys.executable, "-c", LIBRARIES],
        "--help": [*skyk, "--help"],
        "show-gpus A100": [*skyk, "show-gpus", "A100"],
        "launch --dryrun": dry_run,
        "dryrun any_of(100)": [*skyk, "launch", "--dryrun", str(tasks / "any_of.yaml")],
        "dryrun hello.yaml": [*skyk, "launch", "--dryrun", str(REPO / "examples" / "hello.yaml")],
        "dryrun, cold cache": dry_run,
        "jobs queue (100 jobs)": [*skyk, "jobs", "queue"],
    }


def fill_jobs(home: Path, count: int) -> None:
    """Record ``count`` finished managed jobs in the state database under ``home`` (untimed)."""
    os.environ["SKYK_HOME"] = str(home)
    from skyk.jobs import state
    from skyk.state import db

    conn = db.connect()
    for index in range(count):
        job_id = state.add(conn, f"job-{index}", [{"run": "echo hi"}], {}, "EAGER_NEXT_REGION",
                           "1x [default CPU instance]")
        state.update(conn, job_id, status=state.SUCCEEDED, started_at=time.time(), run_seconds=3.0)


def bench_env() -> dict[str, str]:
    """Return the environment: real catalogs, and no plugin blocked so all three clouds load."""
    env = dict(os.environ)
    env["SKYK_CATALOG_DIR"] = str(CATALOGS)
    env.pop("SKYK_DISABLE_PLUGINS", None)
    return env


def time_once(argv: list[str], env: dict[str, str]) -> float:
    """Run ``argv`` once and return its wall time; exit with status 2 if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(f"FAILED (exit {proc.returncode}): {' '.join(argv)}\n"
                         f"{proc.stdout}{proc.stderr}")
        raise SystemExit(2)
    return elapsed


def summarize(times: list[float]) -> dict[str, float]:
    """Return median, min and p90 (nearest-rank, so it is an observed time) in seconds."""
    ordered = sorted(times)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
    return {"median_s": statistics.median(ordered), "min_s": ordered[0], "p90_s": p90}


def run_benchmark(runs: int) -> dict:
    """Time every command ``runs`` times, round-robin, and return the report as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp)
        (tasks / "task.yaml").write_text(TASK_YAML)
        (tasks / "any_of.yaml").write_text(any_of_yaml())
        cache = tasks / "cache"
        fill_jobs(tasks / "home", QUEUED_JOBS)
        env = dict(bench_env(), XDG_CACHE_HOME=str(cache), SKYK_HOME=str(tasks / "home"))
        cmds = commands(tasks)
        times: dict[str, list[float]] = {label: [] for label in cmds}
        for round_no in range(WARMUP_ROUNDS + runs):
            for label, argv in cmds.items():
                if label.endswith("cold cache"):
                    shutil.rmtree(cache, ignore_errors=True)
                elapsed = time_once(argv, env)
                # Warm-up rounds fill the OS file cache and bytecode caches; not counted.
                if round_no >= WARMUP_ROUNDS:
                    times[label].append(elapsed)
    base = statistics.median(times["baseline"])
    results = {}
    for label, argv in cmds.items():
        stats = summarize(times[label])
        results[label] = {"argv": argv, **stats, "ratio": stats["median_s"] / base}
    targets = [{"command": label, "limit_s": limit, "median_s": results[label]["median_s"],
                "passed": results[label]["median_s"] <= limit}
               for label, limit in TARGETS.items()]
    libraries = results["libraries"]["median_s"]
    for r in results.values():
        r["over_libraries_s"] = r["median_s"] - libraries
    return {"python": sys.executable, "runs": runs, "warmup_rounds": WARMUP_ROUNDS,
            "catalog_dir": str(CATALOGS), "commands": results, "targets": targets,
            "passed": all(t["passed"] for t in targets)}


def print_text(report: dict) -> None:
    """Print the report as a table followed by one PASS/FAIL line per target."""
    print(f"python: {report['python']}  runs: {report['runs']} "
          f"(+{report['warmup_rounds']} warm-up)")
    width = max(len(label) for label in report["commands"]) + 4
    print(f"{'COMMAND':<{width}}{'MEDIAN':>9}{'MIN':>9}{'P90':>9}{'xBASE':>8}{'+LIBS':>9}")
    for label, r in report["commands"].items():
        print(f"{label:<{width}}{r['median_s']:>8.3f}s{r['min_s']:>8.3f}s{r['p90_s']:>8.3f}s"
              f"{r['ratio']:>7.1f}x{r['over_libraries_s']:>+8.3f}s")
    for t in report["targets"]:
        verdict, op = ("PASS", "<=") if t["passed"] else ("FAIL", ">")
        print(f"{verdict}: {t['command']} median {t['median_s']:.3f}s {op} {t['limit_s']}s")


def bench_main(run: Callable[..., dict], description: str, default_runs: int,
               argv: list[str] | None = None, *,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               print_report: Callable[[dict], None] = print_text,
               needs_catalogs: bool = True) -> int:
    """Parse ``--runs``/``--json``, run ``run(runs)``, print its report; return 1 if a target is missed.

    A benchmark with flags of its own passes ``add_arguments``, which adds them to
    the parser; ``run`` is then called as ``run(runs, args)`` with the parsed
    arguments. ``print_report`` prints the report when ``--json`` is not given.
    ``needs_catalogs=False`` skips the check for the real catalogs.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=default_runs,
                        help=f"counted rounds (default {default_runs})")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if needs_catalogs and not (CATALOGS / "aws" / "vms.csv").is_file():
        sys.stderr.write(f"real catalogs not found at {CATALOGS}\n")
        return 2
    report = run(args.runs) if add_arguments is None else run(args.runs, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run the start-up benchmark; return 1 if a target is missed."""
    return bench_main(run_benchmark, __doc__.splitlines()[0], 15, argv)


if __name__ == "__main__":
    raise SystemExit(main())

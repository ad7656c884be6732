"""Benchmark starting the AWS test bed (tests/fakecloud's FakeEC2).

Usage: python benchmarks/fake_ec2.py [--runs N] [--json]

Two kinds of figures, round-robin after two uncounted warm-up rounds:

- in fresh processes, each timing itself from its first import (interpreter
  start-up and tear-down are not the bed's): ``cold import boto3`` (which any
  test process using the bed pays anyway), ``cold start`` (import the bed
  and start it: moto's import is most of it) and ``cold start+call`` (plus
  a client and one DescribeVpcs, which builds the bed's first moto region):
  what the first test bed of a pytest run costs;
- in this process, once moto is imported: ``warm start`` (server up, port
  known), and ``warm start+call+close``, a whole bed's life with one
  DescribeVpcs.

Exit status: 0 when every target is met, 1 when one is missed, 2 on failure.
"""

from __future__ import annotations

import subprocess
import sys
import time

from cli_startup import CATALOGS, REPO, WARMUP_ROUNDS, bench_env, bench_main, summarize

#: Median seconds each figure must stay under.
TARGETS = {"cold start": 2.0, "warm start+call+close": 0.2}
# Prints three times, each measured from the script's first line.
COLD = """
import time
begin = time.perf_counter()
import boto3
boto3_done = time.perf_counter()
import sys
sys.path.insert(0, {tests!r})
from fakecloud import FakeEC2
bed = FakeEC2().start()
started = time.perf_counter()
bed.client().describe_vpcs()
called = time.perf_counter()
bed.close()
print(boto3_done - begin, started - begin, called - begin)
"""


def cold_times() -> dict[str, float]:
    """One fresh process's own figures."""
    out = subprocess.run([sys.executable, "-c", COLD.format(tests=str(REPO / "tests"))],
                         capture_output=True, text=True, env=bench_env())
    if out.returncode != 0:
        sys.stderr.write(f"FAILED (exit {out.returncode}):\n{out.stdout}{out.stderr}")
        raise SystemExit(2)
    figures = [float(word) for word in out.stdout.split()]
    return dict(zip(("cold import boto3", "cold start", "cold start+call"), figures, strict=True))


def run_benchmark(runs: int) -> dict:
    """Time each figure ``runs`` times and return the report as a dict."""
    sys.path.insert(0, str(REPO / "tests"))
    from fakecloud import FakeEC2

    times: dict[str, list[float]] = {}
    for round_no in range(WARMUP_ROUNDS + runs):
        measured = cold_times()
        begin = time.perf_counter()
        bed = FakeEC2(catalog_dir=CATALOGS).start()
        measured["warm start"] = time.perf_counter() - begin
        bed.client().describe_vpcs()
        bed.close()
        measured["warm start+call+close"] = time.perf_counter() - begin
        if round_no >= WARMUP_ROUNDS:
            for label, elapsed in measured.items():
                times.setdefault(label, []).append(elapsed)
    results = {label: summarize(values) for label, values in times.items()}
    targets = [{"command": label, "limit_s": limit, "median_s": results[label]["median_s"],
                "passed": results[label]["median_s"] <= limit}
               for label, limit in TARGETS.items()]
    return {"python": sys.executable, "runs": runs, "warmup_rounds": WARMUP_ROUNDS,
            "commands": results, "targets": targets,
            "passed": all(t["passed"] for t in targets)}


def print_report(report: dict) -> None:
    """Print the figures as a table followed by one PASS/FAIL line per target."""
    print(f"python: {report['python']}  runs: {report['runs']} "
          f"(+{report['warmup_rounds']} warm-up)")
    print(f"{'FIGURE':<26}{'MEDIAN':>9}{'MIN':>9}{'P90':>9}")
    for label, r in report["commands"].items():
        print(f"{label:<26}{r['median_s']:>8.3f}s{r['min_s']:>8.3f}s{r['p90_s']:>8.3f}s")
    for t in report["targets"]:
        verdict, op = ("PASS", "<=") if t["passed"] else ("FAIL", ">")
        print(f"{verdict}: {t['command']} median {t['median_s']:.3f}s {op} {t['limit_s']}s")


def main(argv: list[str] | None = None) -> int:
    """Run the test-bed benchmark; return 1 if a target is missed."""
    return bench_main(run_benchmark, __doc__.splitlines()[0], 10, argv,
                      print_report=print_report)


if __name__ == "__main__":
    raise SystemExit(main())

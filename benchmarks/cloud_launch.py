"""Benchmark skyk's own time from ``skyk launch`` to the job's first output line on each cloud's
test bed (AWS, GCP, Azure), 1 and 8 nodes.

Usage: sudo .venv/bin/python benchmarks/cloud_launch.py [--cloud aws gcp azure] [--runs N] [--json]

Runs against the test bed (``tests/fakecloud``): moto's EC2 server, the fake
Compute Engine and the fake Resource Manager, with a node twin (namespace,
sshd) behind each VM, so it needs root, ``ip``, ``sshd`` and ``sudo``, like
the tests that use them. For each cloud, each round launches a fresh cluster
of 1 and then of 8 nodes (``run: echo first-line``) and reads the launch's
output until that line:

- ``total``: wall time from starting ``skyk launch`` to the first line;
- ``cloud``: the time the fake cloud worked in that window (answering
  requests, and running its long operations such as a VM's boot: what a real
  cloud takes instead), as the union of those spans
  (``fakecloud.timing``);
- ``skyk``: total minus cloud, i.e. what skyk itself costs: start-up,
  planning, polling, SSH, the agent, syncing and the job's start.

The cluster is torn down after each round, untimed. Targets (issues 12, 13), per
cloud: 1 node ≤ 3 s of skyk's own time; 8 nodes ≤ 1.5× one node (nodes
prepared in parallel).

Exit status: 0 when every target is met, 1 when one is missed, 2 on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_startup import CATALOGS, WARMUP_ROUNDS, bench_env, bench_main, skyk_argv, summarize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

#: skyk's own seconds to the first line of a 1-node launch
ONE_NODE_TARGET = 3.0
#: 8-node time over 1-node time
EIGHT_NODE_RATIO = 1.5
NODE_COUNTS = (1, 8)
TASK = """\
num_nodes: {nodes}
resources:
  infra: {infra}
  cpus: 2+
run: echo first-line
"""


def _ec2(twins):
    from fakecloud import FakeEC2

    return FakeEC2(twins=twins, catalog_dir=CATALOGS)


def _gce(twins):
    from fakecloud.gcp import FakeGCE

    return FakeGCE(twins=twins, catalog_dir=CATALOGS)


def _arm(twins):
    from fakecloud.azure import FakeARM

    return FakeARM(twins=twins)


#: cloud -> (the fake behind it, where its tasks run)
BEDS = {"aws": (_ec2, "aws/us-east-1"), "gcp": (_gce, "gcp/us-central1"), "azure": (_arm, "azure/eastus")}


def launch_once(skyk: list[str], env: dict[str, str], bed, task: Path, cluster: str) -> dict[str, float]:
    """Launch ``cluster``; return total, cloud and skyk seconds to the job's first line."""
    start_wall, start = time.time(), time.perf_counter()
    proc = subprocess.Popen([*skyk, "launch", "-c", cluster, str(task), "-y"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stdout:
        if "first-line" in line:
            first = time.perf_counter()
            break
    end_wall = time.time()
    out, err = proc.communicate(timeout=300)
    if first is None or proc.returncode != 0:
        sys.stderr.write(f"FAILED (exit {proc.returncode}): launch {cluster}\n{out}{err}")
        raise SystemExit(2)
    from fakecloud.timing import busy_seconds

    total = first - start
    cloud = busy_seconds(bed.busy_spans(), start_wall, end_wall)
    subprocess.run([*skyk, "down", cluster, "-y"], env=env, capture_output=True, check=True, timeout=300)
    return {"total": total, "cloud": cloud, "skyk": total - cloud}


def bench_cloud(cloud: str, runs: int, skyk: list[str]) -> dict:
    """Launch 1 and 8 nodes on ``cloud``'s bed ``runs`` times each, round-robin; return medians."""
    from fakecloud.twins import TwinHost

    make_fake, infra = BEDS[cloud]
    # A bridge of its own, so the benchmark can run beside the test suite's beds.
    with tempfile.TemporaryDirectory() as tmp, \
            TwinHost(Path(tmp) / "twins", bridge="skykbench0", subnet="10.230.0.0/16") as twins, \
            make_fake(twins) as bed:
        env = dict(bench_env(), SKYK_HOME=str(Path(tmp) / "skyk"), **bed.env())
        tasks = {}
        for nodes in NODE_COUNTS:
            tasks[nodes] = Path(tmp) / f"task-{nodes}.yaml"
            tasks[nodes].write_text(TASK.format(nodes=nodes, infra=infra))
        times: dict[str, dict[str, list[float]]] = {
            f"{n} node(s)": {"total": [], "cloud": [], "skyk": []} for n in NODE_COUNTS}
        for round_no in range(WARMUP_ROUNDS + runs):
            for nodes in NODE_COUNTS:
                measured = launch_once(skyk, env, bed, tasks[nodes], f"bench-{nodes}-{round_no}")
                if round_no >= WARMUP_ROUNDS:
                    for key, value in measured.items():
                        times[f"{nodes} node(s)"][key].append(value)
    return {label: {key: summarize(values) for key, values in parts.items()}
            for label, parts in times.items()}


def run_benchmark(runs: int, args) -> dict:
    """Run :func:`bench_cloud` for each cloud asked for; return the report with its targets."""
    skyk = skyk_argv()
    results, targets = {}, []
    for cloud in args.cloud:
        results[cloud] = bench_cloud(cloud, runs, skyk)
        one, eight = (results[cloud][f"{n} node(s)"]["skyk"]["median_s"] for n in NODE_COUNTS)
        targets += [
            {"target": f"{cloud}, 1 node: skyk's own time <= {ONE_NODE_TARGET}s", "value": one,
             "passed": one <= ONE_NODE_TARGET},
            {"target": f"{cloud}, 8 nodes: skyk's own time <= {EIGHT_NODE_RATIO}x one node",
             "value": eight / one, "passed": eight <= EIGHT_NODE_RATIO * one},
        ]
    return {"python": sys.executable, "runs": runs, "warmup_rounds": WARMUP_ROUNDS,
            "cpus": os.cpu_count(), "launches": results, "targets": targets,
            "passed": all(t["passed"] for t in targets)}


def add_arguments(parser) -> None:
    """``--cloud``: the beds to run (default all three)."""
    parser.add_argument("--cloud", nargs="+", choices=sorted(BEDS), default=list(BEDS),
                        help="the clouds whose test beds to launch on (default: all)")


def print_report(report: dict) -> None:
    """Print medians (and p90) of total, cloud and skyk time per node count, then the verdicts."""
    print(f"python: {report['python']}  runs: {report['runs']} (+{report['warmup_rounds']} warm-up)"
          f"  cpus: {report['cpus']}")
    print(f"{'CLOUD':<7}{'LAUNCH':<12}{'TOTAL':>9}{'CLOUD':>9}{'SKYK':>9}{'SKYK P90':>10}")
    for cloud, launches in report["launches"].items():
        for label, parts in launches.items():
            print(f"{cloud:<7}{label:<12}{parts['total']['median_s']:>8.2f}s{parts['cloud']['median_s']:>8.2f}s"
                  f"{parts['skyk']['median_s']:>8.2f}s{parts['skyk']['p90_s']:>9.2f}s")
    for t in report["targets"]:
        print(f"{'PASS' if t['passed'] else 'FAIL'}: {t['target']} (measured {t['value']:.2f})")


def main(argv: list[str] | None = None) -> int:
    """Run the launch benchmark on the clouds' test beds; return 1 if a target is missed."""
    if os.geteuid() != 0:
        sys.stderr.write("the test beds need root (network namespaces, sshd)\n")
        return 2
    return bench_main(run_benchmark, __doc__.splitlines()[0], 3, argv, print_report=print_report,
                      add_arguments=add_arguments)


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark ``skyk status`` with 50 clusters, ``skyk serve status --endpoint`` and ``skyk launch`` of ``echo hi``.

Usage: python benchmarks/cluster_lifecycle.py [--runs N] [--json]

Both run as fresh processes, interleaved round-robin with bare interpreter
start-up (the baseline), in a throw-away SKYK_HOME:

- ``status (50 clusters)``: the state database holds 50 clusters (records
  only; ``status`` answers from local state, so no node is touched).
- ``serve status --endpoint``: the endpoint of one of 10 services (records
  only, answered from local state as a shell's ``$(...)`` would ask it).
- ``launch echo hi``: a new local cluster each round, from the command to the
  job finished and its output printed (``skyk launch`` follows the job); the
  cluster is torn down afterwards, untimed.

Exit status: 0 when every target is met, 1 when one is missed, 2 on failure.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

from cli_startup import WARMUP_ROUNDS, bench_env, bench_main, skyk_argv, summarize, time_once

#: Median wall time (seconds) each command must stay under (issue 3).
TARGETS = {"status (50 clusters)": 0.2, "serve status --endpoint": 0.2, "launch echo hi": 3.0}
STATE_CLUSTERS = 50
STATE_SERVICES = 10


def seed_state(env: dict[str, str]) -> None:
    """Fill the state database with STATE_CLUSTERS UP clusters, through skyk's own state API."""
    code = f"""
from skyk.catalog.offering import Offering
from skyk.provision.types import ClusterHandle, NodeInfo
from skyk.state import clusters, db
conn = db.connect()
for i in range({STATE_CLUSTERS}):
    name = f"bench-{{i}}"
    node = NodeInfo(node_id=f"n{{i}}", internal_ip=f"10.0.{{i}}.2", external_ip=None,
                    runner={{"kind": "local", "home": "/nonexistent", "marker": "x", "netns": None}})
    handle = ClusterHandle(cluster=name, uid=f"u{{i}}", cloud="aws", region="us-east-1",
                           zone="use1-az1", instance_type="p4d.24xlarge", use_spot=False,
                           hourly_price=32.77, accelerator="A100", accelerator_count=8.0,
                           nodes=(node,))
    clusters.begin_launch(conn, name, 0)
    clusters.set_handle(conn, name, handle)
    clusters.set_status(conn, name, clusters.UP)
from skyk.serve import state
for i in range({STATE_SERVICES}):
    state.add_service(conn, f"svc-{{i}}", {{"service": {{"replicas": 2}}, "run": "true"}})
    state.update_service(conn, f"svc-{{i}}", router_port=30001 + i, status="READY")
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def run_benchmark(runs: int) -> dict:
    """Time each command ``runs`` times, round-robin with the baseline; return the report."""
    skyk = skyk_argv()
    with tempfile.TemporaryDirectory() as status_home, tempfile.TemporaryDirectory() as launch_home:
        status_env = dict(bench_env(), SKYK_HOME=status_home)
        launch_env = dict(bench_env(), SKYK_HOME=launch_home)
        seed_state(status_env)
        cmds = {
            "baseline": ([sys.executable, "-c", "pass"], status_env),
            "status (50 clusters)": ([*skyk, "status"], status_env),
            "serve status --endpoint": ([*skyk, "serve", "status", "--endpoint", "svc-3"], status_env),
            "launch echo hi": (None, launch_env),
        }
        times: dict[str, list[float]] = {label: [] for label in cmds}
        for round_no in range(WARMUP_ROUNDS + runs):
            for label, (argv, env) in cmds.items():
                cluster = f"bench-{round_no}"
                if argv is None:
                    argv = [*skyk, "launch", "-c", cluster, "echo hi", "-y"]
                elapsed = time_once(argv, env)
                if label == "launch echo hi":
                    subprocess.run([*skyk, "down", cluster, "-y"], env=env, capture_output=True, check=True)
                if round_no >= WARMUP_ROUNDS:
                    times[label].append(elapsed)
    base = statistics.median(times["baseline"])
    results = {label: {**summarize(t), "ratio": statistics.median(t) / base} for label, t in times.items()}
    targets = [{"command": label, "limit_s": limit, "median_s": results[label]["median_s"],
                "passed": results[label]["median_s"] <= limit} for label, limit in TARGETS.items()]
    return {"python": sys.executable, "runs": runs, "warmup_rounds": WARMUP_ROUNDS,
            "local_netns": os.geteuid() == 0 and os.environ.get("SKYK_LOCAL_NETNS") != "0",
            "commands": results, "targets": targets, "passed": all(t["passed"] for t in targets)}


def main(argv: list[str] | None = None) -> int:
    """Run the status and launch benchmark; return 1 if a target is missed."""
    return bench_main(run_benchmark, __doc__.splitlines()[0], 10, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark how fast a node gets a bucket's data through skyk: COPY and MOUNT, against rclone itself.

Usage: .venv/bin/python benchmarks/storage.py [--size-mib N] [--files N] [--runs N] [--json]

A prefix of ``--files`` objects, ``--size-mib`` in all (default 1 GiB in 16
objects), is put in an S3 bucket of the test bed's S3 (``tests/fakecloud``:
moto's S3 server, in this process). A node is a local sandbox with the agent
installed, driven as the CLI drives it. Each round, interleaved:

- ``direct copy``: ``rclone copy`` run directly, with the same rclone
  configuration the node gets (the baseline);
- ``skyk COPY``: the agent's ``mount`` of the prefix in COPY mode;
- ``direct mount read``: ``rclone mount`` run directly with the flags skyk's
  MOUNT mode uses, every object read through it by ``cat`` (4 at once, as
  rclone copies 4 at once); only the reading is timed;
- ``skyk MOUNT read``: the agent's ``mount`` in MOUNT mode, then the same
  reading, then ``unmount``.

Throughput is the prefix's size over the time. Target (issue 15): each of
skyk's figures ≥ 0.9× the direct ``rclone copy``, medians of the same run.
``skyk MOUNT read`` is also given against ``direct mount read``: reading
through any FUSE mount costs CPU that a copy does not, so that ratio is what
skyk's own way of mounting costs. Needs rclone, fusermount3 and a usable
/dev/fuse.

Exit status: 0 when every target is met, 1 when one is missed, 2 on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cli_startup import WARMUP_ROUNDS, bench_main, summarize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

#: skyk's throughput over rclone's own, at least
TARGET_RATIO = 0.9
BUCKET = "skyk-bench"
PREFIX = "data"


def _fill(s3, size_mib: int, files: int) -> None:
    """Put ``files`` objects of ``size_mib`` MiB in all under the prefix (untimed)."""
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    chunk = os.urandom(1 << 20)
    per_file = max(1, size_mib // files)
    for index in range(files):
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/part-{index:03d}.bin", Body=chunk * per_file)


def _read_all(root: Path) -> int:
    """Read every file under ``root``, 4 at once, in processes of their own; return the bytes there.

    A job reads through the mount from its own processes: reading from this
    one would compete for the interpreter with the S3 server it runs.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file())
    readers = subprocess.Popen(["xargs", "-0", "-P4", "-n1", "cat"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL)
    readers.communicate(b"\0".join(str(p).encode() for p in files))
    if readers.returncode != 0:
        sys.stderr.write(f"reading through the mount failed (exit {readers.returncode})\n")
        raise SystemExit(2)
    return sum(p.stat().st_size for p in files)


def run_benchmark(runs: int, args) -> dict:
    """Time the three transfers ``runs`` times, interleaved; return the report."""
    from fakecloud import FakeS3
    from skyk.agent import rclone
    from skyk.agent.client import AgentClient
    from skyk.agent.mounts import CACHE_MODES, WRITE_BACK
    from skyk.agent.runners import LocalRunner
    from skyk_aws.store import S3Store

    for tool in ("rclone", "fusermount3"):
        if shutil.which(tool) is None:
            sys.stderr.write(f"{tool} is not installed\n")
            raise SystemExit(2)
    if args.files < 1 or args.size_mib < args.files:
        sys.stderr.write("--files must be at least 1 and at most --size-mib\n")
        raise SystemExit(2)
    # Whole MiB per object: the prefix holds exactly this much.
    args.size_mib -= args.size_mib % args.files
    size = args.size_mib * (1 << 20)
    times: dict[str, list[float]] = {"direct copy": [], "skyk COPY": [], "direct mount read": [],
                                     "skyk MOUNT read": []}
    with tempfile.TemporaryDirectory(prefix="skyk-bench-storage-") as tmp, FakeS3() as s3:
        os.environ.update(s3.env())
        _fill(s3, args.size_mib, args.files)
        access = {"s3": S3Store().node_access(BUCKET).as_json()}
        config = rclone.write_config(Path(tmp) / "rclone", access)
        direct_env = rclone.environment(config, access, os.environ)
        home = Path(tmp) / "node"
        home.mkdir()
        client = AgentClient(LocalRunner(home=str(home), marker=f"bench-{uuid.uuid4().hex[:8]}"), timeout=3600)
        client.install()
        spec = {"remotes": access}
        for round_no in range(WARMUP_ROUNDS + runs):
            counted = round_no >= WARMUP_ROUNDS
            target = Path(tmp) / "direct"
            start = time.perf_counter()
            subprocess.run(["rclone", "copy", f"s3:{BUCKET}/{PREFIX}", str(target)], env=direct_env,
                           check=True, capture_output=True)
            elapsed = time.perf_counter() - start
            shutil.rmtree(target)
            if counted:
                times["direct copy"].append(elapsed)

            start = time.perf_counter()
            client.mount({**spec, "mounts": [{"dest": "~/copy", "remote": "s3",
                                              "path": f"{BUCKET}/{PREFIX}", "mode": "COPY"}]})
            elapsed = time.perf_counter() - start
            shutil.rmtree(home / "copy")
            if counted:
                times["skyk COPY"].append(elapsed)

            mounted = Path(tmp) / "direct-mnt"
            mounted.mkdir(exist_ok=True)
            rclone_mount = subprocess.Popen(
                ["rclone", "mount", f"s3:{BUCKET}/{PREFIX}", str(mounted), "--vfs-cache-mode",
                 CACHE_MODES["MOUNT"], "--vfs-write-back", WRITE_BACK, "--cache-dir", f"{tmp}/cache"],
                env=direct_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while not os.path.ismount(mounted):
                    if rclone_mount.poll() is not None:
                        sys.stderr.write("rclone mount exited before it mounted\n")
                        raise SystemExit(2)
                    time.sleep(0.05)
                start = time.perf_counter()
                _read_all(mounted)
                elapsed = time.perf_counter() - start
            finally:
                subprocess.run(["fusermount3", "-u", str(mounted)], capture_output=True)
                rclone_mount.wait()
            if counted:
                times["direct mount read"].append(elapsed)

            client.mount({**spec, "mounts": [{"dest": "~/mnt", "remote": "s3",
                                              "path": f"{BUCKET}/{PREFIX}", "mode": "MOUNT"}]})
            try:
                start = time.perf_counter()
                read = _read_all(home / "mnt")
                elapsed = time.perf_counter() - start
            finally:
                client.unmount()
            if read != size:
                sys.stderr.write(f"read {read} bytes through the mount, not {size}\n")
                raise SystemExit(2)
            if counted:
                times["skyk MOUNT read"].append(elapsed)
    results = {}
    for label, samples in times.items():
        stats = summarize(samples)
        results[label] = {**stats, "mib_per_s": args.size_mib / stats["median_s"]}
    direct = results["direct copy"]["mib_per_s"]
    targets = [{"figure": label, "ratio": results[label]["mib_per_s"] / direct,
                "passed": results[label]["mib_per_s"] >= TARGET_RATIO * direct}
               for label in ("skyk COPY", "skyk MOUNT read")]
    results["skyk MOUNT read"]["vs_direct_mount"] = (results["skyk MOUNT read"]["mib_per_s"]
                                                     / results["direct mount read"]["mib_per_s"])
    return {"size_mib": args.size_mib, "files": args.files, "runs": runs, "warmup_rounds": WARMUP_ROUNDS,
            "results": results, "targets": targets, "passed": all(t["passed"] for t in targets)}


def print_report(report: dict) -> None:
    """Print a table and one PASS/FAIL line per target."""
    print(f"{report['size_mib']} MiB in {report['files']} objects, runs: {report['runs']}"
          f" (+{report['warmup_rounds']} warm-up)")
    print(f"{'TRANSFER':<20}{'MEDIAN':>9}{'MIN':>9}{'MiB/s':>9}")
    for label, r in report["results"].items():
        print(f"{label:<20}{r['median_s']:>8.2f}s{r['min_s']:>8.2f}s{r['mib_per_s']:>9.1f}")
    for t in report["targets"]:
        verdict = "PASS" if t["passed"] else "FAIL"
        print(f"{verdict}: {t['figure']} at {t['ratio']:.2f}x the direct rclone copy (target ≥ {TARGET_RATIO}x)")
    print(f"skyk MOUNT read at {report['results']['skyk MOUNT read']['vs_direct_mount']:.2f}x"
          " a direct rclone mount's read")


def _arguments(parser) -> None:
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the prefix (default 1024)")
    parser.add_argument("--files", type=int, default=16, help="objects in the prefix (default 16)")


def main(argv: list[str] | None = None) -> int:
    """Run the storage benchmark; return 1 if a target is missed."""
    return bench_main(run_benchmark, __doc__.splitlines()[0], 3, argv, add_arguments=_arguments,
                      print_report=print_report, needs_catalogs=False)


if __name__ == "__main__":
    raise SystemExit(main())

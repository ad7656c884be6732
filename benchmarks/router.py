"""Benchmark the skyk router against hitting the replicas directly, and against SkyServe's load balancer.

Usage: python benchmarks/router.py [--llm] [--fast] [--streams] [--workers 1,2]
           [--duration S] [--runs N] [--replicas N] [--held-streams N] [--hold S]
           [--skyserve-python PATH] [--pin] [--json]

Everything runs on 127.0.0.1 and is started (and stopped) by this script:
replicas, routers (``python -m skyk_router``, gunicorn with uvicorn workers,
one router per worker count), nginx, SkyServe's load balancer, and the load
generators (``wrk``, and ``router_client.py`` for what wrk cannot see).

- ``--llm``: LLM-like replicas (``router_upstream.py``; 20 ms answers, or 50
  streamed chunks 10 ms apart) under 256 connections: throughput, latency and
  time to first byte, router vs the same replica processes hit directly.
- ``--fast``: a tiny fixed answer from nginx: requests/s and added latency,
  router vs direct vs SkyServe's load balancer (with ``--skyserve-python``).
- ``--streams``: 1000 slow streams held open through the router at once;
  the router's memory before and during.

With no section flag, all three run. Each measurement is repeated ``--runs``
times, round-robin over the targets so noise hits them alike; the medians are
reported, and ratios are taken against the direct baseline of the same round.
Exit status: 0 when every target is met, 1 when one is missed, 2 on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cli_startup import bench_main

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_report.lua"
UPSTREAM = HERE / "router_upstream.py"
CLIENT = HERE / "router_client.py"
SKYSERVE_CONTROLLER = HERE / "skyserve_controller.py"
HOST = "127.0.0.1"

#: Section (a): concurrency, the replica's answer delay, and the streamed reply.
LLM_CONNECTIONS = 256
LLM_PATH = "/llm?delay=0.02"
STREAM_PATH = "/stream?chunks=50&interval=0.01"
#: About one stream's length: the clients' first requests are spread over it.
STREAM_STAGGER_S = 0.5
#: One client at a time: short streams (5 chunks, 40 ms), so a run has enough of them.
STREAM_IDLE_PATH = "/stream?chunks=5&interval=0.01"
#: Section (b): concurrency of the throughput run (one client for the latency run).
FAST_CONNECTIONS = 64
#: Section (c): streams held at once, how long each stays open, one event a second.
HELD_STREAMS = 1000
HOLD_S = 12
WARMUP_S = 1

#: Targets (see benchmarks/README.md for why). Each is checked on the best router
#: configuration measured, except the held streams, which every configuration must hold.
TARGET_LLM_RATIO = 0.95        # router req/s / direct req/s, 256 connections
TARGET_LLM_ADDED_P50_MS = 2.0  # router p50 - direct p50, 256 connections
TARGET_FAST_VS_SKYSERVE = 10.0  # router req/s / SkyServe req/s, 64 connections
TARGET_FAST_ADDED_P50_MS = 0.5  # router p50 - direct p50, one connection


#: CPU use reported with each measurement, in % of one CPU: the proxy (router or
#: SkyServe), the replicas, the load generator, and everything else on the machine.
CPU_KEYS = ["proxy_cpu_pct", "upstream_cpu_pct", "load_cpu_pct", "other_cpu_pct"]


class BenchError(RuntimeError):
    """Something the benchmark needs failed (a server did not start, a tool is missing)."""


# --------------------------------------------------------------------------- processes


class Processes:
    """Every process this run starts, each in its own process group, stopped at the end.

    Stopping signals the whole group (a gunicorn master and its workers, nginx
    and its workers) with SIGTERM, then SIGKILL after a grace period, so nothing
    outlives the benchmark, even after Ctrl-C or an error.
    """

    def __init__(self, log_dir: Path, pinning: dict[str, list[int]] | None = None) -> None:
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen] = []
        #: CPUs for "router" and "other" processes; empty when not pinning.
        self._pinning = pinning or {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cpus: str = "other", stdout: int | None = None) -> subprocess.Popen:
        """Start ``argv`` in a new session; its output goes to a log named after ``name``."""
        if cpus in self._pinning:
            # taskset rather than preexec_fn, which may deadlock while a thread runs.
            argv = ["taskset", "-c", ",".join(map(str, self._pinning[cpus])), *argv]
        with open(self._log_dir / f"{name}.log", "ab") as sink:
            proc = subprocess.Popen(argv, env=env, cwd=self._log_dir, start_new_session=True,
                                    stdin=subprocess.DEVNULL,
                                    stdout=sink if stdout is None else stdout, stderr=sink)
        self._procs.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The end of a process's log, for error messages."""
        try:
            text = (self._log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen, grace_s: float = 5.0) -> None:
        """Stop ``proc``'s whole process group: SIGTERM, then SIGKILL after ``grace_s``.

        (SIGTERM, not SIGINT, for gunicorn: its quick shutdown on SIGINT leaves
        uvicorn workers running until gunicorn kills them 10 s later.)
        """
        if proc.returncode is None:  # not reaped yet, so its id is still its own
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # The leader is gone; its workers must be too, even if it left them behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout:
            proc.stdout.close()
        self._procs = [p for p in self._procs if p is not proc]

    def stop_all(self) -> None:
        """Stop everything still running, the most recently started first."""
        for proc in reversed(self._procs):
            self.stop(proc)


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (released for the server)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """Status and body of ``GET url``; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_until(check: Callable[[], bool], what: str, procs: Processes, name: str,
               proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it is true; raise BenchError if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode} before {what}:\n"
                             f"{procs.log_tail(name)}")
        if check():
            return
        time.sleep(0.1)
    raise BenchError(f"{what}: not within {timeout_s:g} s\n{procs.log_tail(name)}")


# --------------------------------------------------------------------------- /proc


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def memory_kib(pids: list[int]) -> dict[str, int]:
    """Summed RSS, and PSS (shared pages split among their sharers), in KiB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_kib": rss, "pss_kib": pss}


# --------------------------------------------------------------------------- servers


@dataclass
class Target:
    """Something to send load to: a URL, and the processes whose CPU it costs."""

    label: str
    base_url: str
    #: The proxy in front (a gunicorn master, SkyServe's load balancer); None for direct.
    proc: subprocess.Popen | None = None

    @property
    def proxy_pids(self) -> list[int]:
        """The proxy's process-group leader, when there is a proxy."""
        return [self.proc.pid] if self.proc else []


@dataclass
class Upstreams:
    """The replicas behind everything: their own URLs, a direct URL, and their processes."""

    urls: list[str]
    direct_url: str
    pids: list[int]
    kind: str


def start_llm_replicas(procs: Processes, count: int) -> Upstreams:
    """Start ``count`` replica processes, each on its own port and all on one shared port."""
    shared = free_port()
    urls, pids = [], []
    for index in range(count):
        port = free_port()
        name = f"replica-{index}"
        proc = procs.start(name, [sys.executable, str(UPSTREAM), "--port", str(port),
                                  "--shared-port", str(shared)])
        url = f"http://{HOST}:{port}"
        wait_until(lambda u=url: http_get(f"{u}/llm?delay=0")[0] == 200,
                   f"{name} answers", procs, name, proc)
        urls.append(url)
        pids.append(proc.pid)
    return Upstreams(urls, f"http://{HOST}:{shared}", pids,
                     f"{count} aiohttp replica processes (router_upstream.py)")


#: nginx's settings around a ``server`` block: one worker, no logs, temp files in ``dir``.
NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
{server}
}}
"""
#: A fixed answer on every path.
NGINX_FAST = """\
  server {{
    listen {host}:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}"""
#: A reverse proxy to the replicas, round robin over kept-alive connections, unbuffered.
NGINX_PROXY = """\
  upstream replicas {{
{servers}
    keepalive 512;
  }}
  server {{
    listen {host}:{port} backlog=4096;
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}"""


def nginx_binary() -> str | None:
    """nginx on PATH, or in /usr/sbin (not on a normal user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def start_fast_replica(procs: Processes, work: Path) -> Upstreams:
    """nginx answering every path with "ok"; router_upstream.py's /fast when nginx is missing."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    nginx = nginx_binary()
    if nginx is None:
        proc = procs.start("fast-replica", [sys.executable, str(UPSTREAM), "--port", str(port)])
        wait_until(lambda: http_get(f"{url}/fast")[0] == 200, "replica answers",
                   procs, "fast-replica", proc)
        return Upstreams([url], url, [proc.pid], "aiohttp /fast (nginx not installed)")
    proc = start_nginx(procs, work, "nginx", nginx, NGINX_FAST.format(host=HOST, port=port))
    wait_until(lambda: http_get(f"{url}/fast")[0] == 200, "nginx answers", procs, "nginx", proc)
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    return Upstreams([url], url, [proc.pid], f"{version.split(': ')[-1]}, 1 worker, return 200")


def start_nginx(procs: Processes, work: Path, name: str, nginx: str, server: str) -> subprocess.Popen:
    """Start nginx (binary ``nginx``) with ``server`` in its own directory under ``work``."""
    nginx_dir = work / name
    nginx_dir.mkdir()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=nginx_dir, server=server))
    return procs.start(name, [nginx, "-c", str(conf), "-p", str(nginx_dir),
                              "-e", str(nginx_dir / "nginx-error.log")])


def start_nginx_proxy(procs: Processes, work: Path, upstream_urls: list[str]) -> Target | None:
    """nginx as a reverse proxy to the replicas: what an efficient proxy costs on this machine.

    A reference row, not a target: it shows whether the machine leaves room for
    a proxy at all. None when nginx is not installed.
    """
    nginx = nginx_binary()
    if nginx is None:
        return None
    port = free_port()
    servers = "\n".join(f"    server {url.removeprefix('http://')};" for url in upstream_urls)
    proc = start_nginx(procs, work, "nginx-proxy", nginx,
                       NGINX_PROXY.format(servers=servers, host=HOST, port=port))
    url = f"http://{HOST}:{port}"
    wait_until(lambda: http_get(f"{url}/llm?delay=0")[0] == 200, "the nginx proxy answers",
               procs, "nginx-proxy", proc)
    return Target("nginx proxy", url, proc)


def start_router(procs: Processes, work: Path, workers: int, upstream_urls: list[str],
                 name: str) -> Target:
    """Start ``python -m skyk_router`` with ``workers`` workers; wait until every worker routes."""
    home = work / name
    home.mkdir()
    replicas_file = home / "replicas.json"
    replicas_file.write_text(json.dumps({
        "replicas": [{"id": i, "url": url} for i, url in enumerate(upstream_urls, 1)],
        "load_balancing_policy": "round_robin"}))
    port = free_port()
    # HOME: newer gunicorn puts a control socket there. TMPDIR: the router's
    # scratch directory lands in ours, so it goes even if a worker is killed.
    env = dict(os.environ, HOME=str(home), TMPDIR=str(home))
    proc = procs.start(name, [sys.executable, "-m", "skyk_router", "--host", HOST,
                              "--port", str(port), "--workers", str(workers),
                              "--replicas-file", str(replicas_file)], env=env, cpus="router")
    url = f"http://{HOST}:{port}"
    expected = sorted(upstream_urls)

    def every_worker_routes() -> bool:
        status, body = http_get(f"{url}/-/stats")
        if status != 200:
            return False
        reports = json.loads(body)["workers"]
        return len(reports) == workers and all(sorted(r["replicas"]) == expected for r in reports)

    wait_until(every_worker_routes, f"{name}: all {workers} workers route", procs, name, proc)
    return Target(f"router w={workers}", url, proc)


def start_skyserve(procs: Processes, work: Path, python: str, upstream_url: str) -> Target:
    """SkyServe's load balancer, fed by a stand-in controller; wait until it proxies."""
    controller_port = free_port()
    proc = procs.start("skyserve-controller", [sys.executable, str(SKYSERVE_CONTROLLER),
                                               "--port", str(controller_port),
                                               "--replica", upstream_url])
    controller = f"http://{HOST}:{controller_port}"
    wait_until(lambda: http_get(controller)[0] != 0, "the stand-in controller answers",
               procs, "skyserve-controller", proc)
    home = work / "skyserve-home"
    home.mkdir()
    port = free_port()
    # It binds 0.0.0.0 (not configurable); every request here goes to 127.0.0.1.
    lb = procs.start("skyserve-lb", [python, "-m", "sky.serve.load_balancer",
                                     "--controller-addr", controller,
                                     "--load-balancer-port", str(port)],
                     env=dict(os.environ, HOME=str(home), TMPDIR=str(home)), cpus="router")
    url = f"http://{HOST}:{port}"
    # Its first sync with the controller is 5 s after start; until then it answers 503.
    wait_until(lambda: http_get(f"{url}/fast")[0] == 200, "SkyServe's load balancer proxies",
               procs, "skyserve-lb", lb, timeout_s=60)
    return Target("skyserve", url, lb)


# --------------------------------------------------------------------------- load


def load_cpu(usage: resource.struct_rusage) -> float:
    """CPU seconds in an rusage."""
    return usage.ru_utime + usage.ru_stime


def finish(proc: subprocess.Popen) -> float:
    """Reap ``proc`` and return the CPU seconds it used."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return load_cpu(usage)


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine so far, all CPUs together (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_meter(groups: dict[str, list[int]]) -> Iterator[dict[str, float]]:
    """Measure the CPU each group of process trees uses inside the block (% of one CPU).

    ``machine_cpu_pct`` is the whole machine's (all CPUs: at most 100 x CPUs),
    so what else ran on a shared machine shows.
    """
    trees = {name: [p for leader in leaders for p in descendants(leader)]
             for name, leaders in groups.items()}
    before = {name: cpu_seconds(pids) for name, pids in trees.items()}
    machine_before = machine_busy_seconds()
    started = time.monotonic()
    result: dict[str, float] = {}
    yield result
    wall = time.monotonic() - started
    for name, pids in trees.items():
        result[f"{name}_cpu_s"] = cpu_seconds(pids) - before[name]
        result[f"{name}_cpu_pct"] = 100 * result[f"{name}_cpu_s"] / wall
    result["machine_cpu_pct"] = 100 * (machine_busy_seconds() - machine_before) / wall
    result["wall_s"] = wall


def add_load_cpu(cpu: dict[str, float]) -> None:
    """Add the load generator's share, and what the rest of the machine used meanwhile."""
    cpu["load_cpu_pct"] = 100 * cpu["load_cpu_s"] / cpu["wall_s"]
    ours = sum(cpu.get(f"{name}_cpu_pct", 0.0) for name in ("proxy", "upstream", "load"))
    cpu["other_cpu_pct"] = max(0.0, cpu["machine_cpu_pct"] - ours)


def run_wrk(procs: Processes, url: str, connections: int, duration_s: int,
            groups: dict[str, list[int]]) -> dict:
    """One wrk run (one thread); its results, with the CPU used by each process group."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s",
            "-s", str(WRK_SCRIPT), url]
    with cpu_meter(groups) as cpu:
        proc = procs.start("wrk", argv, stdout=subprocess.PIPE)
        out = proc.stdout.read().decode()
        cpu["load_cpu_s"] = finish(proc)
    procs.stop(proc)
    add_load_cpu(cpu)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}) on {url}:\n{out}"
                         f"{procs.log_tail('wrk')}")
    result = json.loads(line.removeprefix("WRK_JSON "))
    seconds = result["duration_us"] / 1e6
    errors = sum(result["errors"].values())
    return {"requests_per_s": result["requests"] / seconds, "requests": result["requests"],
            "errors": errors, "p50_ms": result["latency_us"]["p50"] / 1000,
            "p90_ms": result["latency_us"]["p90"] / 1000,
            "p99_ms": result["latency_us"]["p99"] / 1000, **cpu}


def run_client(procs: Processes, mode: str, url: str, connections: int,
               groups: dict[str, list[int]], extra: list[str],
               on_event: Callable[[dict], None] | None = None) -> dict:
    """Run router_client.py; pass its interim events to ``on_event``; return its final JSON."""
    argv = [sys.executable, str(CLIENT), mode, url, "--connections", str(connections), *extra]
    with cpu_meter(groups) as cpu:
        proc = procs.start(f"client-{mode}", argv, stdout=subprocess.PIPE)
        report = None
        for raw in proc.stdout:
            message = json.loads(raw)
            if message.get("event") not in (None, "done"):
                if on_event:
                    on_event(message)
                continue
            report = message
        cpu["load_cpu_s"] = finish(proc)
    procs.stop(proc)
    add_load_cpu(cpu)
    if proc.returncode != 0 or report is None:
        raise BenchError(f"router_client.py {mode} failed (exit {proc.returncode}) on {url}:\n"
                         f"{procs.log_tail(f'client-{mode}')}")
    return {**report, **cpu}


def cpu_groups(target: Target, upstreams: Upstreams) -> dict[str, list[int]]:
    """The process groups whose CPU a measurement reports."""
    groups = {"upstream": upstreams.pids}
    if target.proc:
        groups["proxy"] = target.proxy_pids
    return groups


def median_rows(rounds: list[dict[str, dict]], keys: list[str]) -> dict[str, dict]:
    """Per target, the median over rounds of each numeric key (and the rounds themselves)."""
    rows: dict[str, dict] = {}
    for label in rounds[0]:
        samples = [r[label] for r in rounds]
        rows[label] = {key: statistics.median(s[key] for s in samples)
                       for key in keys if all(s.get(key) is not None for s in samples)}
        rows[label]["rounds"] = samples
    return rows


def compare(rows: dict[str, dict], rounds: list[dict[str, dict]], direct: str,
            value: str, added: list[str]) -> None:
    """Add to each row the per-round ratio of ``value`` to ``direct`` and the added latencies."""
    for label, row in rows.items():
        row[f"{value}_ratio"] = statistics.median(
            r[label][value] / r[direct][value] for r in rounds)
        for key in added:
            row[f"added_{key}"] = statistics.median(r[label][key] - r[direct][key] for r in rounds)


# --------------------------------------------------------------------------- sections


def section_llm(procs: Processes, work: Path, args: argparse.Namespace, runs: int) -> dict:
    """(a) LLM-like replicas: throughput, latency and time to first byte, router vs direct."""
    upstreams = start_llm_replicas(procs, args.replicas)
    targets = [Target("direct", upstreams.direct_url)]
    targets += [start_router(procs, work, w, upstreams.urls, f"router-llm-w{w}")
                for w in args.workers]
    reference = start_nginx_proxy(procs, work, upstreams.urls)
    targets += [reference] if reference else []
    for target in targets:  # warm-up: pools filled, code paths run once
        run_wrk(procs, target.base_url + LLM_PATH, LLM_CONNECTIONS, WARMUP_S, {})
    plain, streamed, idle = [], [], []
    for _ in range(runs):
        plain.append({t.label: run_wrk(procs, t.base_url + LLM_PATH, LLM_CONNECTIONS,
                                       args.duration, cpu_groups(t, upstreams))
                      for t in targets})
        streamed.append({t.label: flat_ttfb(run_client(
            procs, "ttfb", t.base_url + STREAM_PATH, LLM_CONNECTIONS, cpu_groups(t, upstreams),
            ["--duration", str(args.duration), "--stagger", str(STREAM_STAGGER_S)]))
            for t in targets})
        idle.append({t.label: flat_ttfb(run_client(
            procs, "ttfb", t.base_url + STREAM_IDLE_PATH, 1, cpu_groups(t, upstreams),
            ["--duration", str(max(1, args.duration // 2))])) for t in targets})
    procs.stop_all()
    plain_rows = median_rows(plain, ["requests_per_s", "errors", "p50_ms", "p99_ms",
                                     *CPU_KEYS, "proxy_cpu_s", "requests"])
    compare(plain_rows, plain, "direct", "requests_per_s", ["p50_ms", "p99_ms"])
    per_request_cpu(plain_rows, plain)
    stream_keys = ["streams_per_s", "errors", "ttfb_p50_ms", "ttfb_p99_ms", "complete_p50_ms",
                   "complete_p99_ms", *CPU_KEYS]
    streamed_rows = median_rows(streamed, stream_keys)
    compare(streamed_rows, streamed, "direct", "streams_per_s",
            ["ttfb_p50_ms", "ttfb_p99_ms", "complete_p50_ms"])
    idle_rows = median_rows(idle, stream_keys)
    compare(idle_rows, idle, "direct", "streams_per_s", ["ttfb_p50_ms", "ttfb_p99_ms"])
    return {"upstream": upstreams.kind, "connections": LLM_CONNECTIONS,
            "paths": {"plain": LLM_PATH, "streamed": STREAM_PATH, "idle": STREAM_IDLE_PATH},
            "plain": plain_rows, "streamed": streamed_rows, "streamed_one_client": idle_rows}


def flat_ttfb(report: dict) -> dict:
    """The client's report with its percentiles in milliseconds at the top level."""
    flat = {k: v for k, v in report.items() if not isinstance(v, dict)}
    for group in ("ttfb", "complete"):
        for q, seconds in report[f"{group}_s"].items():
            flat[f"{group}_{q}_ms"] = None if seconds is None else seconds * 1000
    return flat


def per_request_cpu(rows: dict[str, dict], rounds: list[dict[str, dict]]) -> None:
    """Add the proxy's CPU time per request, in microseconds (median over rounds)."""
    for label, row in rows.items():
        if label == "direct":
            continue
        row["proxy_cpu_us_per_request"] = statistics.median(
            1e6 * r[label]["proxy_cpu_s"] / max(1, r[label]["requests"]) for r in rounds)


def section_fast(procs: Processes, work: Path, args: argparse.Namespace, runs: int) -> dict:
    """(b) A tiny fixed answer: requests/s and added latency, router vs direct vs SkyServe."""
    upstreams = start_fast_replica(procs, work)
    targets = [Target("direct", upstreams.direct_url)]
    targets += [start_router(procs, work, w, upstreams.urls, f"router-fast-w{w}")
                for w in args.workers]
    skyserve = None
    if args.skyserve_python:
        targets.append(start_skyserve(procs, work, args.skyserve_python, upstreams.urls[0]))
        skyserve = subprocess.run(
            [args.skyserve_python, "-c",
             "import importlib.metadata as m; print(m.version('skypilot'))"],
            capture_output=True, text=True).stdout.strip() or "unknown"
    for target in targets:
        run_wrk(procs, target.base_url + "/fast", FAST_CONNECTIONS, WARMUP_S, {})
    many, one = [], []
    for _ in range(runs):
        many.append({t.label: run_wrk(procs, t.base_url + "/fast", FAST_CONNECTIONS,
                                      args.duration, cpu_groups(t, upstreams))
                     for t in targets})
        one.append({t.label: run_wrk(procs, t.base_url + "/fast", 1, args.duration,
                                     cpu_groups(t, upstreams)) for t in targets})
    procs.stop_all()
    keys = ["requests_per_s", "errors", "p50_ms", "p99_ms", *CPU_KEYS, "proxy_cpu_s", "requests"]
    many_rows, one_rows = median_rows(many, keys), median_rows(one, keys)
    for rows, rounds in ((many_rows, many), (one_rows, one)):
        compare(rows, rounds, "direct", "requests_per_s", ["p50_ms", "p99_ms"])
        per_request_cpu(rows, rounds)
        if skyserve:
            for label, row in rows.items():
                row["vs_skyserve"] = statistics.median(
                    r[label]["requests_per_s"] / r["skyserve"]["requests_per_s"] for r in rounds)
    return {"upstream": upstreams.kind, "connections": FAST_CONNECTIONS,
            "skyserve": skyserve, "many": many_rows, "one": one_rows}


def section_streams(procs: Processes, work: Path, args: argparse.Namespace) -> dict:
    """(c) Slow streams through the router, all at once: all held, and the router's memory."""
    upstreams = start_llm_replicas(procs, 1)
    path = f"/hold?seconds={args.hold}&interval=1"
    results = {}
    for workers in args.workers:
        target = start_router(procs, work, workers, upstreams.urls, f"router-streams-w{workers}")
        results[target.label] = hold_streams(procs, target, upstreams, path, args)
        procs.stop(target.proc)
    procs.stop_all()
    return {"upstream": upstreams.kind, "path": path, "routers": results}


def hold_streams(procs: Processes, target: Target, upstreams: Upstreams, path: str,
                 args: argparse.Namespace) -> dict:
    """Hold ``args.held_streams`` streams through one router; its memory before and during."""
    # Some requests first, so code paths and pools are in place before "before".
    run_wrk(procs, target.base_url + "/llm?delay=0", 8, WARMUP_S, {})
    time.sleep(0.5)
    before = memory_kib(descendants(target.proc.pid))
    during: dict = {}
    peak = dict.fromkeys(before, 0)
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.25):
            now = memory_kib(descendants(target.proc.pid))
            for key in peak:
                peak[key] = max(peak[key], now[key])

    def on_all_open(event: dict) -> None:
        # Every stream has its first byte: all are open through the router now.
        during.update(memory_kib(descendants(target.proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        report = run_client(procs, "hold", target.base_url + path, args.held_streams,
                            cpu_groups(target, upstreams),
                            ["--timeout", str(args.hold + 30)], on_event=on_all_open)
    finally:
        stop_sampling.set()
        sampler.join()
    per_stream = ((during["rss_kib"] - before["rss_kib"]) / args.held_streams
                  if during else None)
    return {"streams": args.held_streams, "held_at_once": report["max_concurrent"],
            "completed": report["completed"], "errors": report["errors"],
            "first_errors": report["first_errors"],
            "all_open_after_s": report["all_open_after_s"],
            "memory_before_kib": before, "memory_during_kib": during, "memory_peak_kib": peak,
            "rss_per_stream_kib": per_stream,
            **{key: report[key] for key in CPU_KEYS}}


# --------------------------------------------------------------------------- report


def best(rows: dict[str, dict], key: str, prefix: str = "router") -> tuple[str, float] | None:
    """The router row with the highest ``key``."""
    candidates = [(label, row[key]) for label, row in rows.items()
                  if label.startswith(prefix) and row.get(key) is not None]
    return max(candidates, key=lambda c: c[1]) if candidates else None


def lowest(rows: dict[str, dict], key: str) -> tuple[str, float] | None:
    """The router row with the lowest ``key``."""
    candidates = [(label, row[key]) for label, row in rows.items()
                  if label.startswith("router") and row.get(key) is not None]
    return min(candidates, key=lambda c: c[1]) if candidates else None


def target(name: str, found: tuple[str, float] | None, op: str, limit: float,
           unit: str = "") -> dict:
    """One target: met when the value compares to ``limit`` as ``op`` says."""
    label, value = found if found else ("-", float("nan"))
    passed = value >= limit if op == ">=" else value <= limit
    return {"target": name, "config": label, "value": value, "op": op, "limit": limit,
            "unit": unit, "passed": bool(passed)}


def other_cpu(node: object) -> list[float]:
    """Every ``other_cpu_pct`` in the report: what the rest of the machine used meanwhile."""
    if isinstance(node, dict):
        found = [node["other_cpu_pct"]] if "other_cpu_pct" in node else []
        return found + [v for value in node.values() for v in other_cpu(value)]
    if isinstance(node, list):
        return [v for value in node for v in other_cpu(value)]
    return []


def collect_targets(report: dict) -> list[dict]:
    """Every target for the sections that ran."""
    targets = []
    if llm := report["sections"].get("llm"):
        rows = llm["plain"]
        targets.append(target("(a) throughput router/direct, 256 conns",
                              best(rows, "requests_per_s_ratio"), ">=", TARGET_LLM_RATIO))
        targets.append(target("(a) added p50, 256 conns", lowest(rows, "added_p50_ms"),
                              "<=", TARGET_LLM_ADDED_P50_MS, " ms"))
    if fast := report["sections"].get("fast"):
        if fast["skyserve"]:
            targets.append(target("(b) router/SkyServe requests/s, 64 conns",
                                  best(fast["many"], "vs_skyserve"), ">=",
                                  TARGET_FAST_VS_SKYSERVE))
        targets.append(target("(b) added p50, 1 conn", lowest(fast["one"], "added_p50_ms"),
                              "<=", TARGET_FAST_ADDED_P50_MS, " ms"))
    if streams := report["sections"].get("streams"):
        for label, row in streams["routers"].items():
            held = row["held_at_once"] if row["completed"] == row["streams"] \
                and not row["errors"] else 0
            targets.append(target("(c) streams held at once and completed", (label, held),
                                  ">=", row["streams"]))
    return targets


def print_rows(rows: dict[str, dict], columns: list[tuple[str, str, str]]) -> None:
    """A table: one line per target; ``columns`` are (heading, key, format)."""
    widths = [max(8, len(heading) + 1) for heading, _, _ in columns]
    print(f"  {'TARGET':<12}" + "".join(f"{heading:>{width}}"
                                        for (heading, _, _), width in zip(columns, widths, strict=True)))
    for label, row in rows.items():
        cells = []
        for (_, key, fmt), width in zip(columns, widths, strict=True):
            value = row.get(key)
            text = "-" if value is None else format(value, fmt)
            cells.append(f"{text:>{width}}")
        print(f"  {label:<12}" + "".join(cells))


def print_report(report: dict) -> None:
    """Print the sections' tables, then one PASS/FAIL line per target."""
    print(f"router benchmark: {report['cpus']} CPUs, router workers {report['workers']}, "
          f"{report['runs']} run(s) x {report['duration_s']} s, {report['wrk']}, "
          f"pinning: {report['pinning']}")
    other = report["other_cpu_pct"]
    if other["median"] is not None:
        print(f"CPU used by other processes during the measurements: median {other['median']:.0f}%,"
              f" max {other['max']:.0f}% (of {100 * report['cpus']}%)"
              + ("  <- a busy machine: figures are contended" if other["median"] > 25 else ""))
    cpu = [("CPU% proxy", "proxy_cpu_pct", ".0f"), ("upstream", "upstream_cpu_pct", ".0f"),
           ("load", "load_cpu_pct", ".0f"), ("other", "other_cpu_pct", ".0f")]
    if llm := report["sections"].get("llm"):
        print(f"\n(a) LLM-like replica: {llm['upstream']}; {llm['connections']} connections")
        print(f"  wrk -t1 -c{llm['connections']} GET {llm['paths']['plain']}")
        print_rows(llm["plain"], [("REQ/S", "requests_per_s", ".0f"),
                                  ("xDIRECT", "requests_per_s_ratio", ".2f"),
                                  ("P50 ms", "p50_ms", ".2f"), ("P99 ms", "p99_ms", ".2f"),
                                  ("+P50 ms", "added_p50_ms", ".2f"),
                                  ("+P99 ms", "added_p99_ms", ".2f"), ("ERR", "errors", ".0f"),
                                  ("us/req", "proxy_cpu_us_per_request", ".0f"), *cpu])
        for key, title in (("streamed", f"{llm['connections']} concurrent streams"),
                           ("streamed_one_client", "one client")):
            path = llm["paths"]["streamed" if key == "streamed" else "idle"]
            print(f"  router_client.py ttfb, {title}, GET {path}")
            print_rows(llm[key], [("STREAMS/S", "streams_per_s", ".0f"),
                                  ("xDIRECT", "streams_per_s_ratio", ".2f"),
                                  ("TTFB P50", "ttfb_p50_ms", ".2f"),
                                  ("TTFB P99", "ttfb_p99_ms", ".2f"),
                                  ("+TTFB P50", "added_ttfb_p50_ms", ".2f"),
                                  ("+TTFB P99", "added_ttfb_p99_ms", ".2f"),
                                  ("END P50", "complete_p50_ms", ".1f"),
                                  ("ERR", "errors", ".0f"), *cpu])
    if fast := report["sections"].get("fast"):
        skyserve = (f"SkyServe (skypilot {fast['skyserve']})" if fast["skyserve"] else
                    "SkyServe skipped: no --skyserve-python given")
        print(f"\n(b) fast replica: {fast['upstream']}; {skyserve}")
        for key, conns in (("many", fast["connections"]), ("one", 1)):
            print(f"  wrk -t1 -c{conns} GET /fast")
            print_rows(fast[key], [("REQ/S", "requests_per_s", ".0f"),
                                   ("xDIRECT", "requests_per_s_ratio", ".3f"),
                                   ("xSKYSERVE", "vs_skyserve", ".1f"),
                                   ("P50 ms", "p50_ms", ".3f"), ("P99 ms", "p99_ms", ".3f"),
                                   ("+P50 ms", "added_p50_ms", ".3f"),
                                   ("ERR", "errors", ".0f"),
                                   ("us/req", "proxy_cpu_us_per_request", ".0f"), *cpu])
    if streams := report["sections"].get("streams"):
        first = next(iter(streams["routers"].values()), None)
        count = first["streams"] if first else 0
        print(f"\n(c) {count} streams held through the router: GET {streams['path']}; "
              f"memory = sum over the gunicorn master and workers")
        print(f"  {'TARGET':<13}{'HELD':>6}{'DONE':>6}{'ERR':>5}{'OPEN s':>8}"
              f"{'RSS before':>12}{'RSS during':>12}{'RSS peak':>12}{'PSS before':>12}"
              f"{'PSS during':>12}{'RSS/stream':>12}")
        for label, row in streams["routers"].items():
            before, during = row["memory_before_kib"], row["memory_during_kib"]
            mib = lambda kib: "-" if kib is None else f"{kib / 1024:.1f} MiB"  # noqa: E731
            per = "-" if row["rss_per_stream_kib"] is None else f"{row['rss_per_stream_kib']:.1f} KiB"
            opened = "-" if row["all_open_after_s"] is None else f"{row['all_open_after_s']:.2f}"
            print(f"  {label:<13}{row['held_at_once']:>6}{row['completed']:>6}{row['errors']:>5}"
                  f"{opened:>8}{mib(before['rss_kib']):>12}{mib(during.get('rss_kib')):>12}"
                  f"{mib(row['memory_peak_kib']['rss_kib']):>12}{mib(before['pss_kib']):>12}"
                  f"{mib(during.get('pss_kib')):>12}{per:>12}")
            if row["first_errors"]:
                print(f"    errors: {row['first_errors']}")
    print()
    for t in report["targets"]:
        verdict = "PASS" if t["passed"] else "FAIL"
        op = t["op"] if t["passed"] else {">=": "<", "<=": ">"}[t["op"]]
        print(f"{verdict}: {t['target']}: {t['config']} {t['value']:.4g}{t['unit']} "
              f"{op} {t['limit']:g}{t['unit']}")


# --------------------------------------------------------------------------- main


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not {value}")
    return value


def worker_counts(text: str) -> list[int]:
    """An argparse type: worker counts such as ``1,2``."""
    try:
        counts = [positive(part) for part in text.split(",") if part.strip()]
    except (ValueError, argparse.ArgumentTypeError):
        counts = []
    if not counts:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2, not {text!r}")
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The router benchmark's own flags."""
    parser.add_argument("--llm", action="store_true", help="run section (a): LLM-like replicas")
    parser.add_argument("--fast", action="store_true",
                        help="run section (b): a tiny fixed answer (nginx), and SkyServe")
    parser.add_argument("--streams", action="store_true",
                        help="run section (c): streams held at once, and memory")
    parser.add_argument("--workers", type=worker_counts, default=[1, 2],
                        help="router worker counts to measure, comma-separated (default 1,2)")
    parser.add_argument("--duration", type=positive, default=4,
                        help="seconds per measurement (default 4)")
    parser.add_argument("--replicas", type=positive, default=2,
                        help="replica processes in section (a) (default 2)")
    parser.add_argument("--held-streams", type=positive, default=HELD_STREAMS,
                        help=f"streams held at once in section (c) (default {HELD_STREAMS})")
    parser.add_argument("--hold", type=positive, default=HOLD_S,
                        help=f"seconds each held stream stays open (default {HOLD_S})")
    parser.add_argument("--skyserve-python", metavar="PATH",
                        help="python of a venv with skypilot installed; without it the "
                             "SkyServe comparison is skipped")
    parser.add_argument("--pin", action="store_true",
                        help="run the routers on the last CPU and everything else on the others")


def run_benchmark(runs: int, args: argparse.Namespace) -> dict:
    """Run the chosen sections; return the report."""
    sections = [name for name in ("llm", "fast", "streams") if getattr(args, name)] \
        or ["llm", "fast", "streams"]
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk not found: install it (Debian: apt-get install wrk)\n")
        raise SystemExit(2)
    if args.skyserve_python and not os.access(args.skyserve_python, os.X_OK):
        sys.stderr.write(f"--skyserve-python {args.skyserve_python}: not an executable\n")
        raise SystemExit(2)
    if "fast" in sections and not args.skyserve_python:
        sys.stderr.write("note: SkyServe comparison skipped (give --skyserve-python PATH, "
                         "the python of a venv with `pip install skypilot`)\n")
    # Held streams need a descriptor each on the client, and two in the router.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * args.held_streams + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))
    cpus = sorted(os.sched_getaffinity(0))
    pinning: dict[str, list[int]] = {}
    if args.pin:
        if len(cpus) < 2 or shutil.which("taskset") is None:
            sys.stderr.write("--pin needs two CPUs or more, and taskset (util-linux)\n")
            raise SystemExit(2)
        pinning = {"router": cpus[-1:], "other": cpus[:-1]}
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    wrk_version = (wrk_version.stdout + wrk_version.stderr).split()[:2]
    report: dict = {"python": sys.executable, "cpus": len(cpus), "workers": args.workers,
                    "runs": runs, "duration_s": args.duration, "wrk": " ".join(wrk_version),
                    "pinning": ({k: v for k, v in pinning.items()} if pinning else "none"),
                    "sections": {}}
    with tempfile.TemporaryDirectory(prefix="skyk-router-bench-") as tmp:
        procs = Processes(Path(tmp), pinning)
        try:
            if "llm" in sections:
                report["sections"]["llm"] = section_llm(procs, Path(tmp), args, runs)
            if "fast" in sections:
                report["sections"]["fast"] = section_fast(procs, Path(tmp), args, runs)
            if "streams" in sections:
                report["sections"]["streams"] = section_streams(procs, Path(tmp), args)
        except BenchError as error:
            sys.stderr.write(f"FAILED: {error}\n")
            raise SystemExit(2) from None
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                procs.stop_all()
            finally:
                signal.signal(signal.SIGINT, previous)
    others = other_cpu(report["sections"])
    report["other_cpu_pct"] = {"median": statistics.median(others) if others else None,
                               "max": max(others, default=None)}
    report["targets"] = collect_targets(report)
    report["passed"] = all(t["passed"] for t in report["targets"])
    return report


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every started process is stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the router benchmark; return 1 if a target is missed."""
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return bench_main(run_benchmark, __doc__.splitlines()[0], 2, argv,
                          add_arguments=add_arguments, print_report=print_report,
                          needs_catalogs=False)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; every process the benchmark started was stopped\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The service controller: one background process per service that keeps its replicas right.

It outlives the ``skyk serve up`` that started it and keeps everything in the
state database, so a restarted controller picks up where the last one
stopped: replicas keep their ids, and a replica whose launch was cut short
is checked and, if need be, replaced, never duplicated.

Each tick it tears down failed replicas, probes the others, launches new
ones (through the normal launch path, so they land on the cheapest
feasible offering) until the service has as many as it should, and tells
the router which replicas are ready over a small loopback HTTP endpoint.

Run as ``python -m skyk.serve.controller NAME``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from skyk.agent.procs import pid_alive
from skyk.catalog.store import skyk_home
from skyk.envvars import seconds
from skyk.lifecycle.owned import cluster_gone, down_cluster
from skyk.provision.types import ClusterHandle
from skyk.serve import state
from skyk.serve.autoscale import Autoscaler, scaling_policy
from skyk.serve.load import QUEUE_METRICS, queue_length, router_load, router_stats
from skyk.serve.plan import SpotPolicy, plan_version, published, retire_old
from skyk.serve.policies import LoadSample
from skyk.serve.probe import probe
from skyk.serve.replica_job import save_log, server_ended
from skyk.serve.routing import Routing
from skyk.spec.service import qps_for
from skyk.spec.task import Task, task_from_mapping
from skyk.state import clusters, db

#: seconds between ticks
TICK = 0.5
#: consecutive failed probes before a READY replica is replaced
PROBE_FAILURES_TO_REPLACE = 3
#: most seconds between launches after repeated failures (the first wait is ``SKYK_SERVE_BACKOFF``, 5 s)
MAX_BACKOFF = 300.0
#: the replica port when the task names none (SkyServe's default)
DEFAULT_PORT = 8080
#: seconds a retired replica stays up after leaving the router's list (two router polls, and margin)
DRAIN_MIN = 1.5
#: seconds between asking a failing replica's agent whether its server has ended
JOB_CHECK_EVERY = 2.0
#: failed replicas kept (torn down) in ``serve status`` per service, so their notes stay readable
KEPT_FAILED = 5
#: logs of torn-down replicas kept per service, for ``serve logs NAME ID``
KEPT_LOGS = 20
#: the task secret whose comma-separated keys the endpoint requires as ``Authorization: Bearer KEY``
API_KEYS_SECRET = "SKYK_SERVE_API_KEYS"


def service_dir(name: str) -> Path:
    """Return where a service's logs live."""
    path = skyk_home() / "serve" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def saved_log(name: str, replica_id: int) -> Path:
    """Where the controller saves a replica's log when it tears the replica down."""
    return skyk_home() / "serve" / name / "replicas" / f"{replica_id}.log"


def replica_port(task: Task) -> int:
    """The port replicas serve on: ``service.ports``, else the first of ``resources.ports``."""
    if task.service and task.service.ports:
        return task.service.ports
    ports = task.resources.ports or ()
    return ports[0][0] if ports else DEFAULT_PORT


def replica_url(handle: ClusterHandle, task: Task) -> str:
    """The base URL a replica serves on: its head node's address and the service's port."""
    return f"http://{handle.head.ip}:{replica_port(task)}"


def replica_task(mapping: dict, replica_id: int) -> Task:
    """The task a replica cluster runs: the service's, with the replica id in its env."""
    data = dict(mapping)
    envs = dict(data.get("envs") or {})
    envs.update({"SKYK_SERVE_REPLICA_ID": str(replica_id), "SKYPILOT_SERVE_REPLICA_ID": str(replica_id)})
    data["envs"] = envs
    return task_from_mapping(data, f"<service replica {replica_id}>")


def log(message: str) -> None:
    """One line in the controller's log (its stdout)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Controller:
    """Keeps one service's replicas launched, probed, replaced, scaled and published."""

    def __init__(self, name: str):
        self.name = name
        self.conn = db.connect()
        self.busy: set[int] = set()  # replicas a worker thread is launching or tearing down
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16)  # launches and teardowns (slow)
        self.probes = ThreadPoolExecutor(max_workers=16)
        self.backoff = {True: Backoff(), False: Backoff()}  # by spot, so spot failures spare on-demand
        self.published: list[dict] = []
        self.policy = "round_robin"
        self.hold_s = 0.0
        self.api_keys: list[str] | None = None
        self.scaler: tuple[int, Autoscaler] | None = None  # (version, its autoscaler)
        self.router: str | None = None  # the router's URL, read by worker threads
        self.queue_names = QUEUE_METRICS  # the engine's queue gauges on its /metrics
        self.tasks: dict[int, Task] = {}  # each version's task, by version number
        self.job_checked: dict[int, float] = {}  # when each replica's agent was last asked about its job
        self.job_checks: dict[int, Future] = {}  # those questions still unanswered or unread
        self.routing = Routing()  # the list versions, and whether the router routes to a replica yet
        self.accelerators: dict[int, str | None] = {}  # each replica's accelerator, once its nodes exist

    def version_task(self, version: int) -> Task:
        """The task of one version of the service (a recorded version never changes)."""
        task = self.tasks.get(version)
        if task is None:
            mapping, _ = state.version(self.conn, self.name, version)
            task = self.tasks[version] = task_from_mapping(mapping, f"<service {self.name} version {version}>")
        return task

    # ------------------------------------------------------------- publishing

    def view(self) -> dict:
        """The router's view: ready replicas (their list's version), policy, cold-start hold, API key hashes."""
        # The version is read before the list, and tick() sets them the other way round: a list
        # never goes out with a version that is newer than it (the router would report it too soon).
        version = self.routing.version
        return {"replicas": self.published, "version": version, "load_balancing_policy": self.policy,
                "hold_s": self.hold_s, "api_keys_sha256": self.api_keys}

    def serve_replicas(self, port: int | None) -> int:
        """Answer the router's ``GET /-/replicas`` on loopback; return the port."""
        controller = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's API
                if self.path != "/-/replicas":
                    self.send_error(404)
                    return
                body = json.dumps(controller.view()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the router polls twice a second: keep the log quiet
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        server = http.server.ThreadingHTTPServer((state.LOOPBACK, port or 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]

    # -------------------------------------------------------------- replicas

    def _launch(self, replica: state.ReplicaRecord, mapping: dict) -> None:
        from skyk.lifecycle.launch import LaunchOptions, launch
        from skyk.spec.resources import ResourceFields
        conn = db.connect()
        try:
            task = replica_task(mapping, replica.id)
            state.set_replica(conn, self.name, replica.id, status=state.PROVISIONING)
            kind = "spot" if replica.spot else "on-demand"
            log(f"replica {replica.id} (version {replica.version}, {kind}): launching cluster {replica.cluster}")
            launch(task, LaunchOptions(replica.cluster, override=ResourceFields(use_spot=replica.spot),
                                       detach=True))
            handle = clusters.get(conn, replica.cluster).handle
            url = replica_url(handle, task)
            state.set_replica(conn, self.name, replica.id, status=state.STARTING, url=url)
            log(f"replica {replica.id}: started at {url} on {handle.infra}")
        except Exception as exc:  # noqa: BLE001 - any launch failure fails this replica only
            from skyk.errors import SkykError

            message = exc.one_line() if isinstance(exc, SkykError) else f"{type(exc).__name__}: {exc}"
            log(f"replica {replica.id}: launch failed: {message}")
            state.set_replica(conn, self.name, replica.id, status=state.FAILED, note=message[:500])
            self.backoff[replica.spot].failed()
        finally:
            with self.lock:
                self.busy.discard(replica.id)

    def _teardown(self, replica: state.ReplicaRecord, drain: bool) -> None:
        conn = db.connect()
        try:
            if drain and replica.url:
                self._drain(replica)
            self._save_log(conn, replica)
            down_cluster(conn, replica.cluster)
            if replica.status in state.DOOMED:
                # The row stays, so 'serve status' shows why it failed; _forget_failed prunes it.
                log(f"replica {replica.id}: torn down, kept as {replica.status} ({replica.note or '-'})")
            else:
                state.remove_replica(conn, self.name, replica.id)
                log(f"replica {replica.id}: torn down ({replica.note or replica.status})")
        except Exception as exc:  # noqa: BLE001 - retried next tick
            log(f"replica {replica.id}: teardown failed, will retry: {exc}")
        finally:
            with self.lock:
                self.busy.discard(replica.id)

    def _save_log(self, conn, replica: state.ReplicaRecord) -> None:
        """Keep the replica's server log past its cluster, so a failed rollout can be debugged."""
        record = clusters.get(conn, replica.cluster)
        if record is None or record.handle is None or record.status != clusters.UP:
            return  # no node to ask (a preempted one would only time out)
        path = saved_log(self.name, replica.id)
        if save_log(record.handle, path):
            # Replica ids only grow: the highest are the newest.
            logs = sorted(path.parent.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
            for old in logs[:-KEPT_LOGS]:
                old.unlink(missing_ok=True)

    def _drain(self, replica: state.ReplicaRecord) -> None:
        """Wait until the router has dropped the replica and its requests have finished."""
        # The router re-reads the replica list every 0.5 s: after this, no new request goes there.
        time.sleep(DRAIN_MIN)
        deadline = time.monotonic() + drain_limit()
        router = self.router
        while router and time.monotonic() < deadline:
            stats = router_stats(router)
            if stats is None or not stats.get("in_flight", {}).get(replica.url):
                return
            time.sleep(0.5)
        log(f"replica {replica.id}: still had requests after {drain_limit():g}s of draining")

    def _submit(self, replica_id: int, work, *args) -> None:
        with self.lock:
            if replica_id in self.busy:
                return
            self.busy.add(replica_id)
        self.pool.submit(work, *args)

    def _retire(self, replica: state.ReplicaRecord, why: str) -> None:
        """Take a replica out of rotation now and tear it down once drained."""
        if replica.id in self.busy:
            return  # still launching: retired next tick, once its launch settles
        log(f"replica {replica.id}: retiring ({why})")
        state.set_replica(self.conn, self.name, replica.id, status=state.SHUTTING_DOWN, note=why)
        self._submit(replica.id, self._teardown, dataclasses.replace(replica, note=why), True)

    def _probe_all(self, replicas: list[state.ReplicaRecord]) -> None:
        targets = [r for r in replicas if r.url and r.status in (state.STARTING, state.READY, state.NOT_READY)]
        # Each replica is probed as its own version says: during an update that changes the
        # probe, the old version's replicas keep answering the old probe.
        specs = {r.id: self.version_task(r.version).service.probe for r in targets}
        results = list(self.probes.map(lambda r: probe(r.url, specs[r.id]), targets)) if targets else []
        now = time.time()
        ended = self._ended_servers([r for r, (ok, _) in zip(targets, results, strict=True) if not ok], now)
        for replica, (ok, why) in zip(targets, results, strict=True):
            spec = specs[replica.id]
            if ok:
                if replica.status != state.READY and not self.routing.admit(replica.id):
                    # Listed for the router now; READY once every router worker routes to it.
                    state.set_replica(self.conn, self.name, replica.id, probe_failures=0,
                                      note="ready; waiting for the router to route to it")
                    continue
                if replica.status != state.READY:
                    log(f"replica {replica.id}: READY")
                    self.backoff[replica.spot].reset()
                state.set_replica(self.conn, self.name, replica.id, status=state.READY, probe_failures=0,
                                  note=None)
                continue
            gone = cluster_gone(self.conn, replica.cluster)
            if gone:
                # The cloud took the nodes away: for a spot replica, that is a preemption.
                status = state.PREEMPTED if replica.spot else state.FAILED
                log(f"replica {replica.id}: {status}: {gone}")
                state.set_replica(self.conn, self.name, replica.id, status=status, note=gone)
            elif replica.id in ended:
                # Its server exited: it can never become ready, whatever initial_delay_seconds says.
                log(f"replica {replica.id}: FAILED: {ended[replica.id]}")
                state.set_replica(self.conn, self.name, replica.id, status=state.FAILED, note=ended[replica.id])
                self.backoff[replica.spot].failed()
            elif replica.status == state.STARTING:
                if now - replica.launched_at > spec.initial_delay_seconds:
                    log(f"replica {replica.id}: not ready after {spec.initial_delay_seconds}s: {why}")
                    state.set_replica(self.conn, self.name, replica.id, status=state.FAILED_INITIAL_DELAY,
                                      note=why)
                    # A version that never becomes ready must not crash-loop: back off.
                    self.backoff[replica.spot].failed()
            else:
                failures = replica.probe_failures + 1
                status = state.FAILED_PROBING if failures >= PROBE_FAILURES_TO_REPLACE else state.NOT_READY
                if status != replica.status:
                    log(f"replica {replica.id}: {status}: {why}")
                state.set_replica(self.conn, self.name, replica.id, status=status, probe_failures=failures,
                                  note=why)

    def _ended_servers(self, failing: list[state.ReplicaRecord], now: float) -> dict[int, str]:
        """Replicas failing their probe whose server has ended (id -> why), as their agents said.

        Each agent is asked in the background at most every ``JOB_CHECK_EVERY`` seconds and
        its answer read on a later tick, so a slow agent never holds the tick up.
        """
        ids = {r.id for r in failing}
        # Replicas passing their probe now (or gone): whatever their agents say is moot.
        self.job_checks = {i: check for i, check in self.job_checks.items() if i in ids}
        self.job_checked = {i: when for i, when in self.job_checked.items() if i in ids}
        ended = {}
        for replica in failing:
            check = self.job_checks.get(replica.id)
            if check is not None:
                if check.done():
                    del self.job_checks[replica.id]
                    why = None if check.exception() else check.result()
                    if why:
                        ended[replica.id] = why
            elif now - self.job_checked.get(replica.id, 0.0) >= JOB_CHECK_EVERY:
                handle = getattr(clusters.get(self.conn, replica.cluster), "handle", None)
                if handle is not None:
                    self.job_checked[replica.id] = now
                    self.job_checks[replica.id] = self.probes.submit(server_ended, handle)
        return ended

    def _forget_failed(self, replicas: list[state.ReplicaRecord], torn_down: set[int]) -> None:
        """Drop all but the newest ``KEPT_FAILED`` failed replicas that are already torn down."""
        kept = [r for r in replicas if r.id in torn_down]
        for replica in kept[:max(0, len(kept) - KEPT_FAILED)]:
            state.remove_replica(self.conn, self.name, replica.id)

    # ------------------------------------------------------------------ tick

    def recover(self) -> None:
        """Settle replicas a previous controller left mid-launch."""
        for replica in state.replicas(self.conn, self.name):
            if replica.status in (state.PENDING, state.PROVISIONING):
                record = clusters.get(self.conn, replica.cluster)
                if record is not None and record.status == clusters.UP and record.handle is not None:
                    mapping, _ = state.version(self.conn, self.name, replica.version)
                    task = replica_task(mapping, replica.id)
                    url = replica_url(record.handle, task)
                    state.set_replica(self.conn, self.name, replica.id, status=state.STARTING, url=url)
                else:
                    state.set_replica(self.conn, self.name, replica.id, status=state.FAILED,
                                      note="its launch was interrupted (controller restarted)")

    def service(self) -> state.ServiceRecord | None:
        return state.get_service(self.conn, self.name)

    def target(self, record: state.ServiceRecord, task: Task, alive: list[state.ReplicaRecord]) -> int:
        """How many replicas of the newest version the service should run now."""
        service = task.service
        if service.replicas is not None:
            return service.replicas
        spec = service.replica_policy
        if spec is None:
            return 1
        if not spec.autoscales:
            return spec.min_replicas
        if self.scaler is None or self.scaler[0] != record.version:
            # A new controller (or version) starts from what runs, so a restart changes nothing.
            current = sum(r.version == record.version for r in alive)
            self.scaler = (record.version, Autoscaler(scaling_policy(spec), spec, current))
            self.queue_names = engine_queue_metrics(task)
        ready = [r for r in alive if r.status == state.READY]
        return self.scaler[1].target(self.load(alive, ready), time.time())

    def load(self, alive: list[state.ReplicaRecord], ready: list[state.ReplicaRecord]) -> LoadSample:
        """The service's load now: the router's request rate and the engines' queues."""
        router = self.router
        rate, waiting = (router_load(router, qps_window()) if router else None) or (0.0, 0)
        queues = list(self.probes.map(lambda r: queue_length(r.url, names=self.queue_names), ready)) if ready else []
        return LoadSample(current_replicas=len(alive), ready_replicas=len(ready), requests_per_second=rate,
                          queue_lengths=tuple(q for q in queues if q is not None), waiting_requests=waiting,
                          replica_accelerators=tuple(self.accelerator(r) for r in alive),
                          ready_accelerators=tuple(self.accelerator(r) for r in ready))

    def share(self, task: Task):
        """Each replica's share of the load by its GPU, when the target is per accelerator; else None."""
        spec = task.service.replica_policy
        targets = spec.target_qps_per_replica if spec is not None else None
        if not isinstance(targets, dict):
            return None
        return lambda replica: qps_for(targets, self.accelerator(replica))

    def accelerator(self, replica: state.ReplicaRecord) -> str | None:
        """The accelerator of a replica's nodes; None until they exist (or for CPU-only nodes)."""
        if replica.id not in self.accelerators:
            handle = getattr(clusters.get(self.conn, replica.cluster), "handle", None)
            if handle is None:
                return None  # still provisioning: ask again next tick
            # A replica's nodes never change, so one lookup is enough.
            self.accelerators[replica.id] = handle.accelerator
        return self.accelerators[replica.id]

    def tick(self) -> bool:
        """Do one round of work; False once the service is gone or shutting down."""
        record = self.service()
        if record is None or record.status == "SHUTTING_DOWN":
            return False
        task = task_from_mapping(record.task, f"<service {self.name}>")
        self.router = router_url(record)
        _, mode = state.version(self.conn, self.name, record.version)
        self.policy = task.service.load_balancing_policy or "round_robin"
        spec = task.service.replica_policy
        self.hold_s = cold_start_hold() if spec is not None and spec.min_replicas == 0 else 0.0
        self.api_keys = api_key_hashes(task)
        self.routing.new_round(router_stats(self.router) if self.router else None)
        replicas = state.replicas(self.conn, self.name)
        torn_down: set[int] = set()
        for replica in replicas:
            if replica.status in state.DOOMED:
                # A failed replica keeps its status and note while and after its cluster goes.
                if clusters.get(self.conn, replica.cluster) is not None:
                    self._submit(replica.id, self._teardown, replica, False)
                elif replica.id not in self.busy:
                    torn_down.add(replica.id)
            elif replica.status == state.SHUTTING_DOWN:  # retired, possibly by a previous controller
                self._submit(replica.id, self._teardown, replica, True)
        self._forget_failed(replicas, torn_down)
        self._probe_all(replicas)

        replicas = state.replicas(self.conn, self.name)
        alive = [r for r in replicas if r.status in state.ALIVE]
        new = [r for r in alive if r.version == record.version]
        old = [r for r in alive if r.version != record.version]
        target = self.target(record, task, alive)
        plan = plan_version(new, target, spot_policy(task), self.share(task))
        for is_spot, count in ((True, plan.launch_spot), (False, plan.launch_ondemand)):
            if count and self.backoff[is_spot].ready():
                for _ in range(count):
                    replica = state.add_replica(self.conn, self.name, record.version, spot=is_spot)
                    self._submit(replica.id, self._launch, replica, record.task)
        for replica in plan.retire:
            self._retire(replica, f"scaling down to {target}")
        new_ready = sum(r.status == state.READY for r in new)
        for replica in retire_old(old, new_ready, target, mode):
            self._retire(replica, f"replaced by version {record.version}")

        replicas = state.replicas(self.conn, self.name)
        routed = [{"id": r.id, "url": r.url}
                  for r in published(self.routing.candidates(replicas), record.version, target, mode)]
        if routed != self.published:
            log("router sends requests to replicas " + (", ".join(str(r["id"]) for r in routed) or "(none)"))
        self.published = routed
        self.routing.publish(r["id"] for r in routed)  # after the list: see view()
        # A READY replica is one every router worker routes to (or did, until this very list).
        status = ("READY" if any(r.status == state.READY for r in replicas) else
                  "REPLICA_INIT" if any(r.status in state.ALIVE for r in replicas) else "NO_REPLICA")
        if status != record.status:
            state.update_service(self.conn, self.name, status=status)
        return True


class Backoff:
    """Exponential back-off between launches after failures, so a broken version does not crash-loop."""

    def __init__(self) -> None:
        self.failures = 0
        self.until = 0.0

    def failed(self) -> None:
        """Count a failure and push the next launch back."""
        self.failures += 1
        # The exponent stops growing once the wait is capped: after ~1000 failures
        # 2 ** failures would overflow a float.
        doublings = min(self.failures - 1, 30)
        self.until = time.time() + min(MAX_BACKOFF, first_backoff() * 2.0 ** doublings)

    def reset(self) -> None:
        """A replica became ready: launch freely again."""
        self.failures, self.until = 0, 0.0

    def ready(self) -> bool:
        """Whether a launch may start now."""
        return time.time() >= self.until


def engine_queue_metrics(task: Task) -> tuple[str, ...]:
    """The queue gauges the task's runtime plugin names; vLLM's and SGLang's when it cannot say."""
    from skyk.errors import SkykError
    from skyk.runtime.resolve import queue_metrics

    try:
        return queue_metrics(task)
    except SkykError as exc:  # the plugin was uninstalled since serve up: the defaults still apply
        log(f"queue metrics: {exc.one_line()}; reading {', '.join(QUEUE_METRICS)}")
        return QUEUE_METRICS


def spot_policy(task: Task) -> SpotPolicy:
    """The service's spot mix: ``resources.use_spot`` and the replica policy's fallbacks."""
    spec = task.service.replica_policy
    return SpotPolicy(use_spot=bool(task.resources.use_spot),
                      base_ondemand=spec.base_ondemand_fallback_replicas if spec else 0,
                      dynamic_fallback=bool(spec and spec.dynamic_ondemand_fallback))


def api_key_hashes(task: Task) -> list[str] | None:
    """SHA-256 of each key in the ``SKYK_SERVE_API_KEYS`` secret (comma-separated); None: no keys."""
    keys = [k.strip() for k in str(task.secrets.get(API_KEYS_SECRET) or "").split(",") if k.strip()]
    return [hashlib.sha256(k.encode()).hexdigest() for k in keys] or None


def first_backoff() -> float:
    """First wait between replica launches after a failure (``SKYK_SERVE_BACKOFF``, default 5)."""
    return seconds("SKYK_SERVE_BACKOFF", 5.0)


def check_settings() -> None:
    """Read every ``SKYK_SERVE_*`` setting once, so a bad value fails ``serve up``, not each tick."""
    for setting in (first_backoff, qps_window, cold_start_hold, drain_limit):
        setting()


def qps_window() -> float:
    """Seconds over which the request rate is averaged (``SKYK_SERVE_QPS_WINDOW``, default 60).

    At most 60: the router keeps its per-second counts for that long.
    """
    return min(60.0, max(1.0, seconds("SKYK_SERVE_QPS_WINDOW", 60.0)))


def cold_start_hold() -> float:
    """How long the router holds requests while a service scaled to zero starts a replica."""
    return seconds("SKYK_SERVE_COLD_START_HOLD", 300.0)


def drain_limit() -> float:
    """How long a retired replica may finish its requests (``SKYK_SERVE_DRAIN_SECONDS``, default 120)."""
    return seconds("SKYK_SERVE_DRAIN_SECONDS", 120.0)


def router_url(record: state.ServiceRecord) -> str | None:
    """The service's router on loopback (HTTPS with ``service.tls``), or None before it starts."""
    if record.router_port is None:
        return None
    scheme = "https" if (record.task.get("service") or {}).get("tls") else "http"
    return f"{scheme}://{state.LOOPBACK}:{record.router_port}"


def endpoint_host() -> str | None:
    """Where the endpoint is published besides loopback, so the local cloud's nodes reach it.

    Nodes in their own network namespace cannot reach this machine's
    127.0.0.1, so a chat page or a client launched there with ``--env
    ENDPOINT=...`` would get nowhere: the router also listens on the local
    cloud's bridge address, which both this machine and every node reach.
    None (loopback only) when the local cloud is disabled or uses no namespaces.
    """
    from skyk.builtin.local_network import NetworkError, address_for_nodes
    from skyk.plugins.kinds import disabled_plugins

    if "local" in disabled_plugins():
        return None
    try:
        return address_for_nodes()
    except NetworkError as exc:
        log(f"endpoint on loopback only: {exc}")
        return None


def free_port(hosts: list[str], start: int = 30001) -> int:
    """Return the first TCP port from ``start`` free on every one of ``hosts`` (SkyServe's range)."""
    import socket

    for port in range(start, start + 1000):
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError("no free port for the service endpoint")


def start_router(name: str, controller_port: int, hosts: list[str], router_port: int, task: Task) -> int:
    """Start the router for service ``name`` in its own session (HTTPS with ``service.tls``); return its pid."""
    command = [sys.executable, "-m", "skyk_router", "--port", str(router_port),
               "--controller", f"http://{state.LOOPBACK}:{controller_port}"]
    for host in hosts:
        command += ["--host", host]
    if task.service.tls:
        command += ["--ssl-keyfile", task.service.tls.keyfile, "--ssl-certfile", task.service.tls.certfile]
    with open(service_dir(name) / "load_balancer.log", "ab") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    """Run the controller of the service named in ``argv`` until the service goes away."""
    name = (argv if argv is not None else sys.argv[1:])[0]
    controller = Controller(name)
    record = controller.service()
    if record is None:
        log(f"service {name} does not exist")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    controller.recover()
    # One tick before answering the router: a restarted controller must not hand it an empty
    # list (every request would get a 503) while it has not yet looked at its replicas.
    if not tick_safely(controller):
        return 0
    port = controller.serve_replicas(record.controller_port)
    state.update_service(controller.conn, name, controller_pid=os.getpid(), controller_port=port)
    log(f"controller of {name} up (pid {os.getpid()}, replicas endpoint on port {port})")
    while True:
        record = controller.service()
        if record is None:
            return 0
        if not pid_alive(record.router_pid):
            # A restarted router keeps its port, and endpoint_host() sets the bridge up again if it
            # went, so clients and nodes that know the endpoint still reach it.
            host = endpoint_host()
            hosts = [state.LOOPBACK, *([host] if host else [])]
            router_port = record.router_port or free_port(hosts)
            pid = start_router(name, port, hosts, router_port,
                               task_from_mapping(record.task, f"<service {name}>"))
            state.update_service(controller.conn, name, router_pid=pid, router_port=router_port,
                                 router_host=host)
            log(f"router started (pid {pid}) on {' and '.join(hosts)}, port {router_port}")
        time.sleep(TICK)
        if not tick_safely(controller):
            return 0


def tick_safely(controller: Controller) -> bool:
    """Run one tick; False once the service is gone. A failing tick is logged, not fatal."""
    try:
        return controller.tick()
    except Exception:  # noqa: BLE001 - one bad tick must not stop the service
        log("tick failed:\n" + traceback.format_exc())
        return True

if __name__ == "__main__":
    sys.exit(main())

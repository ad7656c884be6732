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

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skyk.agent.procs import pid_alive
from skyk.catalog.store import skyk_home
from skyk.serve import state
from skyk.serve.probe import probe
from skyk.spec.task import Task, task_from_mapping
from skyk.state import db

#: seconds between ticks
TICK = 1.0
#: consecutive failed probes before a READY replica is replaced
PROBE_FAILURES_TO_REPLACE = 3
#: first wait after a replica failed to launch or start; doubles per failure, up to MAX_BACKOFF
BACKOFF = 5.0
MAX_BACKOFF = 300.0
#: the replica port when the task names none (SkyServe's default)
DEFAULT_PORT = 8080


def service_dir(name: str) -> Path:
    """Return where a service's logs live."""
    path = skyk_home() / "serve" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def replica_port(task: Task) -> int:
    """The port replicas serve on: ``service.ports``, else the first of ``resources.ports``."""
    if task.service and task.service.ports:
        return task.service.ports
    ports = task.resources.ports or ()
    return ports[0][0] if ports else DEFAULT_PORT


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
    """Keeps one service's replicas launched, probed, replaced and published."""

    def __init__(self, name: str):
        self.name = name
        self.conn = db.connect()
        self.busy: set[int] = set()  # replicas a worker thread is launching or tearing down
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16)  # launches and teardowns (slow)
        self.probes = ThreadPoolExecutor(max_workers=16)
        self.failures = 0
        self.next_launch_at = 0.0
        self.ready: list[dict] = []
        self.policy = "round_robin"

    # ------------------------------------------------------------- publishing

    def serve_replicas(self, port: int | None) -> int:
        """Answer the router's ``GET /-/replicas`` on loopback; return the port."""
        controller = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's API
                if self.path != "/-/replicas":
                    self.send_error(404)
                    return
                body = json.dumps({"replicas": controller.ready,
                                   "load_balancing_policy": controller.policy,
                                   "api_keys_sha256": None}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the router polls twice a second: keep the log quiet
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]

    # -------------------------------------------------------------- replicas

    def _launch(self, replica: state.ReplicaRecord, mapping: dict) -> None:
        from skyk.lifecycle.launch import LaunchOptions, launch
        from skyk.state import clusters

        conn = db.connect()
        try:
            task = replica_task(mapping, replica.id)
            state.set_replica(conn, self.name, replica.id, status=state.PROVISIONING)
            log(f"replica {replica.id}: launching cluster {replica.cluster}")
            launch(task, LaunchOptions(replica.cluster, detach=True))
            handle = clusters.get(conn, replica.cluster).handle
            url = f"http://{handle.head.ip}:{replica_port(task)}"
            state.set_replica(conn, self.name, replica.id, status=state.STARTING, url=url)
            log(f"replica {replica.id}: started at {url}")
        except Exception as exc:  # noqa: BLE001 - any launch failure fails this replica only
            from skyk.errors import SkykError

            message = exc.one_line() if isinstance(exc, SkykError) else f"{type(exc).__name__}: {exc}"
            log(f"replica {replica.id}: launch failed: {message}")
            state.set_replica(conn, self.name, replica.id, status=state.FAILED, note=message[:500])
        finally:
            with self.lock:
                self.busy.discard(replica.id)

    def _teardown(self, replica: state.ReplicaRecord) -> None:
        conn = db.connect()
        try:
            down_cluster(conn, replica.cluster)
            state.remove_replica(conn, self.name, replica.id)
            log(f"replica {replica.id}: torn down ({replica.status})")
        except Exception as exc:  # noqa: BLE001 - retried next tick
            log(f"replica {replica.id}: teardown failed, will retry: {exc}")
        finally:
            with self.lock:
                self.busy.discard(replica.id)

    def _submit(self, replica_id: int, work, *args) -> None:
        with self.lock:
            if replica_id in self.busy:
                return
            self.busy.add(replica_id)
        self.pool.submit(work, *args)

    def _probe_all(self, task: Task, replicas: list[state.ReplicaRecord]) -> None:
        spec = task.service.probe
        targets = [r for r in replicas if r.url and r.status in (state.STARTING, state.READY, state.NOT_READY)]
        results = list(self.probes.map(lambda r: probe(r.url, spec), targets)) if targets else []
        now = time.time()
        for replica, (ok, why) in zip(targets, results, strict=True):
            if ok:
                if replica.status != state.READY:
                    log(f"replica {replica.id}: READY")
                    self.failures = 0
                state.set_replica(self.conn, self.name, replica.id, status=state.READY, probe_failures=0,
                                  note=None)
            elif replica.status == state.STARTING:
                if now - replica.launched_at > spec.initial_delay_seconds:
                    log(f"replica {replica.id}: not ready after {spec.initial_delay_seconds}s: {why}")
                    self._failed(replica, state.FAILED_INITIAL_DELAY, why)
            else:
                failures = replica.probe_failures + 1
                status = state.FAILED_PROBING if failures >= PROBE_FAILURES_TO_REPLACE else state.NOT_READY
                if status != replica.status:
                    log(f"replica {replica.id}: {status}: {why}")
                state.set_replica(self.conn, self.name, replica.id, status=status, probe_failures=failures,
                                  note=why)

    def _failed(self, replica: state.ReplicaRecord, status: str, why: str) -> None:
        state.set_replica(self.conn, self.name, replica.id, status=status, note=why)
        self.failures += 1
        # A version that never becomes ready must not crash-loop: back off.
        self.next_launch_at = time.time() + min(MAX_BACKOFF, BACKOFF * 2 ** (self.failures - 1))

    # ------------------------------------------------------------------ tick

    def recover(self) -> None:
        """Settle replicas a previous controller left mid-launch."""
        from skyk.state import clusters

        for replica in state.replicas(self.conn, self.name):
            if replica.status in (state.PENDING, state.PROVISIONING):
                record = clusters.get(self.conn, replica.cluster)
                if record is not None and record.status == clusters.UP and record.handle is not None:
                    task = replica_task(self.service().task, replica.id)
                    url = f"http://{record.handle.head.ip}:{replica_port(task)}"
                    state.set_replica(self.conn, self.name, replica.id, status=state.STARTING, url=url)
                else:
                    state.set_replica(self.conn, self.name, replica.id, status=state.FAILED,
                                      note="its launch was interrupted (controller restarted)")
            elif replica.status == state.SHUTTING_DOWN:
                state.set_replica(self.conn, self.name, replica.id, status=state.FAILED,
                                  note="teardown was interrupted (controller restarted)")

    def service(self) -> state.ServiceRecord | None:
        return state.get_service(self.conn, self.name)

    def desired(self, task: Task) -> int:
        service = task.service
        if service.replicas is not None:
            return service.replicas
        if service.replica_policy is not None:
            return service.replica_policy.min_replicas
        return 1

    def tick(self) -> bool:
        """Do one round of work; False once the service is gone or shutting down."""
        record = self.service()
        if record is None or record.status == "SHUTTING_DOWN":
            return False
        task = task_from_mapping(record.task, f"<service {self.name}>")
        self.policy = task.service.load_balancing_policy or "round_robin"
        replicas = state.replicas(self.conn, self.name)
        for replica in replicas:
            if replica.status in state.DOOMED or replica.status == state.SHUTTING_DOWN:
                if replica.status != state.SHUTTING_DOWN:
                    state.set_replica(self.conn, self.name, replica.id, status=state.SHUTTING_DOWN)
                self._submit(replica.id, self._teardown, replica)
        self._probe_all(task, replicas)
        replicas = state.replicas(self.conn, self.name)
        alive = [r for r in replicas if r.status in state.ALIVE]
        missing = self.desired(task) - len(alive)
        if missing > 0 and time.time() >= self.next_launch_at:
            for _ in range(missing):
                replica = state.add_replica(self.conn, self.name, record.version)
                self._submit(replica.id, self._launch, replica, record.task)
        elif missing < 0:
            # Scale down the least useful first: not ready before ready, newest first.
            extra = sorted(alive, key=lambda r: (r.status == state.READY, -r.id))[:-missing]
            for replica in extra:
                if replica.id not in self.busy:
                    state.set_replica(self.conn, self.name, replica.id, status=state.SHUTTING_DOWN)
                    self._submit(replica.id, self._teardown, replica)
        replicas = state.replicas(self.conn, self.name)
        self.ready = [{"id": r.id, "url": r.url} for r in replicas if r.status == state.READY]
        status = ("READY" if self.ready else
                  "REPLICA_INIT" if any(r.status in state.ALIVE for r in replicas) else "NO_REPLICA")
        if status != record.status:
            state.update_service(self.conn, self.name, status=status)
        return True


def down_cluster(conn, cluster: str) -> None:
    """Tear down a replica's cluster if it exists."""
    from skyk.lifecycle.control import teardown
    from skyk.state import clusters
    from skyk.state.locks import cluster_lock

    with cluster_lock(cluster):
        record = clusters.get(conn, cluster)
        if record is not None:
            teardown(conn, record, purge=True)


def free_port(start: int = 30001) -> int:
    """Return the first free TCP port from ``start`` (SkyServe's range for endpoints)."""
    import socket

    for port in range(start, start + 1000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port for the service endpoint")


def start_router(name: str, controller_port: int, router_port: int) -> int:
    """Start the router for service ``name`` in its own session; return its pid."""
    out = open(service_dir(name) / "load_balancer.log", "ab")
    with out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "skyk_router", "--host", "127.0.0.1", "--port", str(router_port),
             "--controller", f"http://127.0.0.1:{controller_port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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
    port = controller.serve_replicas(record.controller_port)
    state.update_service(controller.conn, name, controller_pid=os.getpid(), controller_port=port)
    log(f"controller of {name} up (pid {os.getpid()}, replicas endpoint on port {port})")
    controller.recover()
    while True:
        record = controller.service()
        if record is None:
            return 0
        if not pid_alive(record.router_pid):
            router_port = record.router_port or free_port()
            pid = start_router(name, port, router_port)
            state.update_service(controller.conn, name, router_pid=pid, router_port=router_port)
            log(f"router started (pid {pid}) on 127.0.0.1:{router_port}")
        try:
            if not controller.tick():
                return 0
        except Exception:  # noqa: BLE001 - one bad tick must not stop the service
            log("tick failed:\n" + traceback.format_exc())
        time.sleep(TICK)


if __name__ == "__main__":
    sys.exit(main())

"""``skyk serve``: services of many replicas behind one endpoint."""

from __future__ import annotations

import argparse
import contextlib

from skyk.cli.output import add_output_flag

#: ``serve update --mode`` values (the same as skyk.serve.state.UPDATE_MODES, which this light module
#: does not import so that ``--help`` stays fast)
UPDATE_MODES = ("rolling", "blue_green")

HELP = "Serve a task on replicas behind one endpoint: up, update, status, down, logs."

#: replica clusters are called NAME-ID, and cluster names stop at 63 characters
MAX_SERVICE_NAME = 50


def configure(parser) -> None:
    """Add the ``serve`` subcommands."""
    from skyk.cli.main import Parser

    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)
    up = verbs.add_parser("up", help="start a service from a task with a service: section")
    up.add_argument("task", metavar="TASK.yaml", help="the task YAML file")
    up.add_argument("-n", "--service-name", metavar="NAME", help="service name")
    up.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]", help="set an env var")
    up.add_argument("--secret", action="append", default=[], metavar="KEY[=VALUE]", help="set a secret")
    up.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    up.set_defaults(_verb=serve_up)

    update = verbs.add_parser("update", help="roll a service to a new version of its task")
    update.add_argument("service", metavar="NAME", help="the service to update")
    update.add_argument("task", metavar="TASK.yaml", help="the new task YAML file")
    update.add_argument("--mode", choices=UPDATE_MODES, default="rolling",
                        help="rolling: replace replicas one by one (default); blue_green: switch"
                             " traffic once every new replica is ready")
    update.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]", help="set an env var")
    update.add_argument("--secret", action="append", default=[], metavar="KEY[=VALUE]", help="set a secret")
    update.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    update.set_defaults(_verb=serve_update)

    recover = verbs.add_parser("recover", help="start a new controller for a service whose controller died")
    recover.add_argument("service", metavar="NAME")
    recover.set_defaults(_verb=serve_recover)

    status = verbs.add_parser("status", help="services and their replicas")
    status.add_argument("services", nargs="*", metavar="NAME", help="only these services")
    status.add_argument("--endpoint", action="store_true", help="print HOST:PORT of one service alone")
    status.add_argument("-v", "--verbose", action="store_true", help="show replica URLs and notes")
    add_output_flag(status)
    status.set_defaults(_verb=serve_status)

    down = verbs.add_parser("down", help="tear services down: replicas, router, controller")
    down.add_argument("services", nargs="*", metavar="NAME", help="services to tear down")
    down.add_argument("-a", "--all", action="store_true", help="every service")
    down.add_argument("--replica-id", type=int, metavar="N",
                      help="tear down only this replica of one service (the controller replaces it)")
    down.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    down.set_defaults(_verb=serve_down)

    logs = verbs.add_parser("logs", help="a replica's, the controller's or the load balancer's log")
    logs.add_argument("service", metavar="NAME")
    logs.add_argument("replica", nargs="?", type=int, metavar="REPLICA_ID")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--controller", action="store_true", help="the controller's log")
    which.add_argument("--load-balancer", action="store_true", help="the router's log")
    logs.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True,
                      help="keep streaming (default) or print what exists")
    logs.set_defaults(_verb=serve_logs)


def run(args) -> int:
    """Run the chosen verb."""
    return args._verb(args)


def _require(conn, name: str):
    from skyk.errors import not_found
    from skyk.serve import state

    record = state.get_service(conn, name)
    if record is None:
        raise not_found("service", name, [s.name for s in state.list_services(conn)],
                        hint="'skyk serve status' lists your services")
    return record


def _check_name(name: str) -> str:
    from skyk.cli.launch import check_cluster_name
    from skyk.errors import SpecError

    check_cluster_name(name, "service name: ")
    if len(name) > MAX_SERVICE_NAME:
        raise SpecError(f"service name {name!r} is longer than {MAX_SERVICE_NAME} characters",
                        hint="replica clusters are named NAME-ID; pick a shorter name")
    return name


def load_service_task(path: str, envs, secrets) -> dict:
    """Return the task mapping a controller stores: overrides applied, local paths absolute."""
    from skyk.errors import SpecError
    from skyk.spec.stored import stored_mapping
    from skyk.spec.task import task_from_mapping
    from skyk.spec.yamlfile import load_yaml_mapping

    mapping = load_yaml_mapping(path, "task")
    task = task_from_mapping(mapping, path).with_overrides(envs, secrets)
    task.check_ready()
    task.warn_ignored()
    if task.service is None:
        raise SpecError(f"{path}: has no service section, so it cannot be served",
                        hint="add e.g. 'service: {readiness_probe: /health, replicas: 2}',"
                             " or run it with skyk launch")
    # The runtime is resolved into the record, so the controller needs no runtime plugin
    # to launch replicas; only queue_metrics() asks the plugin again.
    mapping = stored_mapping(mapping, task)
    tls = (mapping.get("service") or {}).get("tls")
    if tls:
        mapping["service"] = dict(mapping["service"], tls={key: _existing_file(path, tls[key], f"service.tls.{key}")
                                                          for key in ("keyfile", "certfile")})
    return mapping


def _existing_file(base: str, path: str, what: str) -> str:
    """``path`` made absolute (relative to the task file's directory); it must exist."""
    import os

    from skyk.errors import SpecError

    full = os.path.join(os.path.dirname(os.path.abspath(base)), os.path.expanduser(path))
    if not os.path.isfile(full):
        raise SpecError(f"{base}: {what} {path!r} does not exist", hint="give the path of a PEM file")
    return full


def _preflight() -> None:
    """Fail before anything is recorded when a controller could not run: no router, bad settings."""
    import importlib.util

    from skyk.errors import SkykError
    from skyk.serve.controller import check_settings

    if importlib.util.find_spec("skyk_router") is None:
        raise SkykError("the router (skyk-router) is not installed, so a service has no endpoint",
                        hint="from a skyk checkout: pip install ./router")
    check_settings()


def start_controller(conn, name: str):
    """Start service ``name``'s controller in the background; return the record once it serves."""
    return _wait_for_controller(conn, name, _spawn_controller(name))


def _spawn_controller(name: str):
    """Start service ``name``'s controller in its own session (Ctrl-C here does not reach it)."""
    import subprocess
    import sys

    from skyk.catalog.store import skyk_home
    from skyk.serve.controller import service_dir

    with open(service_dir(name) / "controller.log", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "skyk.serve.controller", name], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, cwd=skyk_home(), start_new_session=True)


def _wait_for_controller(conn, name: str, proc):
    """Return the service's record once its controller ``proc`` serves.

    The controller starts the router; the service is up when the router's
    port is recorded by this controller.
    """
    import time

    from skyk.errors import SkykError
    from skyk.lifecycle.progress import step
    from skyk.serve import state
    from skyk.serve.controller import router_url
    from skyk.serve.load import router_answers

    with step(f"Starting the controller of service {name}"):
        deadline = time.monotonic() + 60
        while True:
            record = state.get_service(conn, name)
            # Up once its router answers, so the endpoint printed next works at once.
            if (record.controller_pid == proc.pid and record.router_port is not None
                    and router_answers(router_url(record), timeout=1.0)):
                return record
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SkykError(f"the controller of service {name} did not start",
                                hint=f"see 'skyk serve logs {name} --controller'")
            time.sleep(0.05)


def serve_up(args) -> int:
    """Record the service and start its controller, which launches replicas and the router."""
    import secrets

    from skyk.errors import SkykError
    from skyk.lifecycle.progress import say
    from skyk.serve import state
    from skyk.state import db

    name = _check_name(args.service_name or f"skyk-service-{secrets.token_hex(2)}")
    mapping = load_service_task(args.task, args.env, args.secret)
    _preflight()
    conn = db.connect()
    proc = None
    try:
        # Ctrl-C waits until both are done: a recorded service always has a controller.
        with _interrupts_held():
            if not state.add_service(conn, name, mapping):
                raise SkykError(f"service {name} already exists",
                                hint=f"'skyk serve update {name} TASK.yaml' to change it,"
                                     f" or 'skyk serve down {name}'")
            proc = _spawn_controller(name)
        record = _wait_for_controller(conn, name, proc)
    except KeyboardInterrupt:
        if proc is None:
            raise
        error = SkykError(f"interrupted, but service {name} keeps starting in the background",
                          hint=f"remove it with 'skyk serve down {name}'")
        error.exit_code = 130  # as for any Ctrl-C
        raise error from None
    say(f"Service {name} is starting; replicas are launching in the background.")
    say(f"  status:   skyk serve status {name}")
    say(f"  endpoint: {record.endpoint}  (for scripts: skyk serve status --endpoint {name})")
    print(record.endpoint)
    return 0


@contextlib.contextmanager
def _interrupts_held():
    """A context in which Ctrl-C is held until the block ends, then raised as KeyboardInterrupt."""
    import signal

    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _controller_alive(record) -> bool:
    from skyk.agent.procs import pid_alive

    return pid_alive(record.controller_pid)


def serve_update(args) -> int:
    """Record a new version of the service; its controller rolls the replicas over to it."""
    from skyk.lifecycle.progress import say
    from skyk.serve import state
    from skyk.state import db

    conn = db.connect()
    record = _require(conn, args.service)
    mapping = load_service_task(args.task, args.env, args.secret)
    _preflight()
    version = state.add_version(conn, record.name, mapping, args.mode)
    if not _controller_alive(record):
        say(f"The controller of service {record.name} is not running; starting a new one.")
        start_controller(conn, record.name)
    say(f"Service {record.name}: updating to version {version} ({args.mode.replace('_', '-')}).")
    say(f"  watch it: skyk serve status {record.name}")
    return 0


def serve_recover(args) -> int:
    """Start a new controller for a service whose controller died; it resumes from the state."""
    from skyk.errors import SkykError
    from skyk.lifecycle.progress import say
    from skyk.state import db

    conn = db.connect()
    record = _require(conn, args.service)
    if _controller_alive(record):
        raise SkykError(f"the controller of service {record.name} is running (pid {record.controller_pid})",
                        hint=f"see 'skyk serve logs {record.name} --controller'")
    _preflight()
    start_controller(conn, record.name)
    say(f"Service {record.name}: controller restarted; it resumes the replicas it had.")
    return 0


def service_status(record) -> str:
    """The service's status, with a dead controller shown as such."""
    if record.status != "SHUTTING_DOWN" and record.controller_pid and not _controller_alive(record):
        return "CONTROLLER_FAILED"
    return record.status


def serve_status(args) -> int:
    """Print the services table and the replicas table, JSON, or one endpoint."""
    import time

    from skyk.errors import SpecError
    from skyk.serve import state
    from skyk.state import clusters, db

    conn = db.connect()
    if args.endpoint:
        if len(args.services) != 1:
            raise SpecError("--endpoint needs exactly one service name", hint="skyk serve status --endpoint NAME")
        record = _require(conn, args.services[0])
        if record.endpoint is None:
            raise SpecError(f"service {record.name} has no endpoint yet", hint="wait a moment and retry")
        print(record.endpoint)
        return 0
    services = ([_require(conn, n) for n in dict.fromkeys(args.services)] if args.services
                else state.list_services(conn))
    names = {s.name for s in services}
    replicas = [r for r in state.replicas(conn) if r.service in names]
    handles = {r.cluster: getattr(clusters.get(conn, r.cluster), "handle", None) for r in replicas}
    now = time.time()
    if args.output == "json":
        from skyk.cli.output import print_json
        from skyk.cli.status import resources

        print_json([{
            "name": s.name, "version": s.version, "status": service_status(s),
            "uptime_seconds": now - s.created_at,
            "endpoint": s.endpoint,
            "replicas": [{"id": r.id, "version": r.version, "status": r.status, "url": r.url, "spot": r.spot,
                          "cluster": r.cluster, "launched_at": r.launched_at, "note": r.note,
                          "infra": handles[r.cluster].infra if handles.get(r.cluster) else None,
                          "cloud": handles[r.cluster].cloud if handles.get(r.cluster) else None,
                          "region": handles[r.cluster].region if handles.get(r.cluster) else None,
                          "resources": resources(handles.get(r.cluster))}
                         for r in replicas if r.service == s.name],
        } for s in services])
        return 0
    from skyk.cli.output import print_table
    from skyk.cli.status import ago, cloud_resources, duration

    if not services:
        print("No services. Start one with: skyk serve up -n NAME TASK.yaml")
        return 0
    print("Services")
    print_table(["NAME", "VERSION", "UPTIME", "STATUS", "REPLICAS", "ENDPOINT"],
                [[s.name, s.version, duration(now - s.created_at), service_status(s),
                  f"{sum(r.service == s.name and r.status == state.READY for r in replicas)}"
                  f"/{sum(r.service == s.name and r.status in state.ALIVE for r in replicas)}",
                  s.endpoint or "-"] for s in services])
    print("\nService Replicas")
    # SkyPilot's columns, so scripts and eyes used to 'sky serve status' find their way.
    headers = ["SERVICE_NAME", "ID", "VERSION", "ENDPOINT", "LAUNCHED", "RESOURCES", "STATUS", "REGION"]
    names = _display_names({h.cloud for h in handles.values() if h is not None})
    rows = []
    for r in replicas:
        handle = handles.get(r.cluster)
        rows.append([r.service, r.id, r.version, r.url.split("://", 1)[-1] if r.url else "-",
                     ago(r.launched_at), cloud_resources(handle, names.get(getattr(handle, "cloud", ""), "")),
                     r.status, handle.region if handle else "-"])
    if args.verbose:
        headers.append("NOTE")
        for row, replica in zip(rows, replicas, strict=True):
            row.append(replica.note or "-")
    print_table(headers, rows)
    import sys

    for record in services:
        if record.status == state.DAMAGED:
            print(f"\nService {record.name}: {record.note}. 'skyk serve down {record.name}' removes it",
                  file=sys.stderr)
        if service_status(record) == "CONTROLLER_FAILED":
            print(f"\nThe controller of service {record.name} is not running; the endpoint keeps serving"
                  f" the replicas it knew. Restart it: skyk serve recover {record.name}", file=sys.stderr)
    return 0


def _display_names(clouds: set[str]) -> dict[str, str]:
    """Each cloud's display name (``AWS``, ``Azure``); a cloud whose plugin is gone keeps its own name."""
    from skyk.plugins.manager import Kernel

    loaded = Kernel.load(("cloud",), sorted(clouds)).clouds() if clouds else {}
    return {name: getattr(loaded.get(name), "display_name", "") or name for name in clouds}


def serve_down(args) -> int:
    """Stop each service's controller and router, and tear down its replicas."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from skyk.cli.targets import confirm
    from skyk.errors import SpecError
    from skyk.lifecycle.progress import step
    from skyk.serve import state
    from skyk.state import db

    conn = db.connect()
    if args.all == bool(args.services):
        raise SpecError("give service names or -a (not both)", hint="skyk serve down NAME, or -a for all")
    if args.replica_id is not None:
        if args.all or len(args.services) != 1:
            raise SpecError("--replica-id needs exactly one service name",
                            hint="skyk serve down NAME --replica-id N")
        return _down_replica(conn, _require(conn, args.services[0]), args.replica_id, args.yes)
    records = state.list_services(conn) if args.all else [_require(conn, n) for n in dict.fromkeys(args.services)]
    confirm("tear down service", [r.name for r in records], args.yes)
    for record in records:
        with step(f"Tearing down service {record.name}"):
            state.update_service(conn, record.name, status="SHUTTING_DOWN")
            _stop_process(record.controller_pid)
            _stop_process(record.router_pid)
            from skyk.lifecycle.owned import down_cluster
            from skyk.serve.controller import saved_log

            replicas = state.replicas(conn, record.name)
            if replicas:
                with ThreadPoolExecutor(max_workers=min(8, len(replicas))) as pool:
                    list(pool.map(lambda r: down_cluster(db.connect(), r.cluster), replicas))
            state.remove_service(conn, record.name)
            # A later service of the same name numbers its replicas from 1 again.
            shutil.rmtree(saved_log(record.name, 0).parent, ignore_errors=True)
    return 0


def _down_replica(conn, record, replica_id: int, yes: bool) -> int:
    """Tear down one replica; a running controller drains it first and launches a replacement."""
    import time

    from skyk.cli.targets import confirm
    from skyk.errors import SkykError, SpecError
    from skyk.lifecycle.owned import down_cluster
    from skyk.lifecycle.progress import step
    from skyk.serve import state

    def current():
        return next((r for r in state.replicas(conn, record.name) if r.id == replica_id), None)

    replica = current()
    if replica is None:
        raise SpecError(f"service {record.name} has no replica {replica_id}",
                        hint=f"'skyk serve status {record.name}' lists replica ids")
    confirm(f"tear down replica {replica_id} of service", [record.name], yes)
    with step(f"Tearing down replica {replica_id} of service {record.name}"):
        state.set_replica(conn, record.name, replica_id, status=state.SHUTTING_DOWN,
                          note="torn down by 'skyk serve down --replica-id'")
        if _controller_alive(record):
            # The controller takes it out of the router's list, drains it, then tears it down.
            deadline = time.monotonic() + 600
            while current() is not None:
                if time.monotonic() > deadline:
                    raise SkykError(f"replica {replica_id} is still shutting down",
                                    hint=f"see 'skyk serve logs {record.name} --controller'")
                time.sleep(0.2)
        else:
            down_cluster(conn, replica.cluster)
            state.remove_replica(conn, record.name, replica_id)
    return 0


def _stop_process(pid: int | None) -> None:
    """Stop a controller or router and everything in its session (SIGTERM, then SIGKILL)."""
    import os
    import signal
    import time

    from skyk.agent.procs import pid_alive

    if not pid_alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)  # each runs in its own session, so its group is its own
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def serve_logs(args) -> int:
    """Print (and follow) one log of the service."""
    from skyk.errors import SpecError
    from skyk.serve import state
    from skyk.state import db

    conn = db.connect()
    record = _require(conn, args.service)
    if args.controller or args.load_balancer:
        if args.replica is not None:
            raise SpecError("give a replica id or --controller/--load-balancer, not both",
                            hint=f"skyk serve logs {record.name} --controller")
        from skyk.serve.controller import service_dir

        path = service_dir(record.name) / ("controller.log" if args.controller else "load_balancer.log")
        return _print_file(path, args.follow)
    if args.replica is None:
        raise SpecError("name a replica id, or --controller / --load-balancer",
                        hint=f"'skyk serve status {record.name}' lists replica ids")
    replica = next((r for r in state.replicas(conn, record.name) if r.id == args.replica), None)
    from skyk.serve.controller import saved_log

    saved = saved_log(record.name, args.replica)
    if saved.is_file() and (replica is None or replica.status not in state.ALIVE):
        # Torn down (retired by an update, or failed): the controller kept its log.
        from skyk.lifecycle.progress import say

        say(f"Replica {args.replica} of service {record.name} is torn down; its log as saved then:")
        return _print_file(saved, follow=False)
    if replica is None:
        raise SpecError(f"service {record.name} has no replica {args.replica}",
                        hint=f"'skyk serve status {record.name}' lists replica ids; the logs of the"
                             " latest torn-down replicas are kept")
    from skyk.lifecycle.jobs import follow
    from skyk.lifecycle.lookup import head_client, require_up

    _, handle = require_up(conn, replica.cluster)
    client = head_client(handle)
    jobs = client.queue()
    if not jobs:
        raise SpecError(f"replica {replica.id} has not started its server yet", hint="retry in a moment")
    if args.follow:
        return follow(client, replica.cluster, jobs[0]["id"])
    import sys

    proc = client.logs(jobs[0]["id"], follow=False)
    sys.stdout.buffer.write(proc.stdout.read())
    proc.wait()
    return 0


def _print_file(path, follow: bool) -> int:
    import sys
    import time

    if not path.exists():
        return 0
    with open(path, "rb") as file:
        while True:
            chunk = file.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not follow:
                return 0
            else:
                try:
                    time.sleep(0.2)
                except KeyboardInterrupt:
                    return 0

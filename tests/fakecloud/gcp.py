"""A fake Compute Engine for tests: the v1 REST API of instances, operations and firewalls.

:class:`FakeGCE` is a small WSGI app of our own (no emulator exists for
Compute Engine) on a threaded werkzeug server at ``127.0.0.1:<free port>``.
It serves the documented paths under ``/compute/v1/projects/{project}/``
with the documented JSON shapes, so the official ``google-cloud-compute``
client, pointed at :attr:`FakeGCE.endpoint` through
``client_options={"api_endpoint": ...}``, talks to it unchanged:

- **instances** (zonal): insert (answers with a zone operation; a repeated
  ``requestId`` returns the first operation and never makes a second VM),
  get, list and aggregatedList (``filter`` on ``labels.KEY``, ``name``,
  ``status``), delete,
  stop (``TERMINATED``), start (``RUNNING`` with a new ``natIP``),
  setLabels, setMetadata; statuses run PROVISIONING, STAGING, RUNNING,
  STOPPING, TERMINATED;
- **operations**: zoneOperations and globalOperations get and wait; a failed
  operation ends ``DONE`` with ``error.errors[].code``, as GCE reports
  capacity and quota failures;
- **firewalls** (global): insert, get, list, delete;
- **faults by rule** (:meth:`FakeGCE.fail`, :class:`fakecloud.faults.Rule`):
  operation-level codes (``ZONE_RESOURCE_POOL_EXHAUSTED``,
  ``QUOTA_EXCEEDED``, ...) end the insert's operation with that error;
  other codes are HTTP errors in GCE's JSON error shape (``forbidden``
  403, ``required`` 401, ...);
- **node twins** (optional ``twins=TwinHost``): each instance boots a twin
  whose users come from the ``ssh-keys`` metadata item, as GCE's guest
  agent makes them (with passwordless sudo); the twin's addresses are the
  instance's ``networkIP`` and ``natIP``; stop, start, delete,
  :meth:`FakeGCE.preempt` and a shutdown run on the node act on both;
- a record of every request (:attr:`FakeGCE.calls`).

Errors have GCE's shape: ``{"error": {"code": 404, "message": ...,
"errors": [{"message": ..., "domain": "global", "reason": "notFound"}]}}``.
Links (``selfLink``, ``zone``, ``targetLink``) point at the fake, never at
googleapis.com.
"""

from __future__ import annotations

import csv
import http
import itertools
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .faults import RequestFacts, Rule
from .serving import LoopbackServer

if TYPE_CHECKING:
    from .twins import Twin, TwinHost

__all__ = ["FakeGCE", "GCECall", "OPERATION_ERRORS", "ssh_keys_cloud_config"]

log = logging.getLogger(__name__)

#: The project ``env()`` names and tests use unless told otherwise.
DEFAULT_PROJECT = "skyk-fake-project"
#: Real catalogs beside the repository (``../shared/catalogs``), the default ``catalog_dir``.
SHARED_CATALOGS = Path(__file__).resolve().parents[3] / "shared" / "catalogs"
#: Longest a ``wait`` call blocks, as GCE's (about two minutes).
WAIT_SECONDS = 120.0

#: Error codes GCE reports in a DONE operation (not as the HTTP answer), with the
#: ``httpErrorStatusCode`` the operation carries.
OPERATION_ERRORS = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": 503,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": 503,
    "RESOURCE_POOL_EXHAUSTED": 503,
    "QUOTA_EXCEEDED": 403,
    "RESOURCE_OPERATION_RATE_EXCEEDED": 403,
    "UNSUPPORTED_OPERATION": 400,
    "INTERNAL_ERROR": 500,
}
_OPERATION_MESSAGES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED":
        "The zone '{zone}' does not have enough resources available to fulfill the request."
        "  Try a different zone, or try again later.",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS":
        "The zone '{zone}' does not have enough resources available to fulfill the request."
        "  '(resource type:compute)'.",
    "RESOURCE_POOL_EXHAUSTED":
        "The zone '{zone}' does not have enough resources available to fulfill the request.",
    "QUOTA_EXCEEDED": "Quota 'CPUS' exceeded.  Limit: 0.0 in region {region}.",
    "RESOURCE_OPERATION_RATE_EXCEEDED": "Operation rate exceeded for resource.",
    "INTERNAL_ERROR": "Internal error. Please try again or contact Google Support.",
}
# HTTP-level error reasons: (status, google.rpc status, default message).
_HTTP_ERRORS = {
    "required": (401, "UNAUTHENTICATED", "Request is missing required authentication credential."),
    "authError": (401, "UNAUTHENTICATED", "Invalid Credentials"),
    "forbidden": (403, "PERMISSION_DENIED", "Required permission for '{target}'."),
    "accessNotConfigured": (403, "PERMISSION_DENIED",
                            "Compute Engine API has not been used in project {project}."),
    "rateLimitExceeded": (403, "PERMISSION_DENIED", "Rate Limit Exceeded"),
    "notFound": (404, "NOT_FOUND", "The resource '{target}' was not found"),
    "alreadyExists": (409, "ALREADY_EXISTS", "The resource '{target}' already exists"),
    "invalid": (400, "INVALID_ARGUMENT", "Invalid value."),
    "badRequest": (400, "INVALID_ARGUMENT", "Bad request."),
    "resourceNotReady": (400, "FAILED_PRECONDITION", "The resource '{target}' is not ready"),
    "conditionNotMet": (412, "FAILED_PRECONDITION", "Labels fingerprint either invalid or "
                                                     "resource labels have changed"),
    "backendError": (503, "UNAVAILABLE", "Internal error. Please try again."),
    "internalError": (500, "INTERNAL", "Internal error. Please try again."),
}
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_SSH_KEY_LINE = re.compile(r"([a-z_][a-z0-9_.-]{0,31}):(\S+ \S+.*)")
_IDS = itertools.count(int(time.time()) * 1000)
_PROJECT = r"/compute/v1/projects/(?P<project>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(_PROJECT + pattern + "$"), action) for method, pattern, action in [
        ("POST", r"/zones/(?P<zone>[^/]+)/instances", "instances.insert"),
        ("GET", r"/zones/(?P<zone>[^/]+)/instances", "instances.list"),
        ("GET", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "instances.get"),
        ("DELETE", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "instances.delete"),
        ("POST", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/stop", "instances.stop"),
        ("POST", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/start", "instances.start"),
        ("POST", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/setLabels",
         "instances.setLabels"),
        ("POST", r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/setMetadata",
         "instances.setMetadata"),
        ("GET", r"/aggregated/instances", "instances.aggregatedList"),
        ("GET", r"/zones/(?P<zone>[^/]+)/operations/(?P<op>[^/]+)", "zoneOperations.get"),
        ("POST", r"/zones/(?P<zone>[^/]+)/operations/(?P<op>[^/]+)/wait", "zoneOperations.wait"),
        ("GET", r"/global/operations/(?P<op>[^/]+)", "globalOperations.get"),
        ("POST", r"/global/operations/(?P<op>[^/]+)/wait", "globalOperations.wait"),
        ("POST", r"/global/firewalls", "firewalls.insert"),
        ("GET", r"/global/firewalls", "firewalls.list"),
        ("GET", r"/global/firewalls/(?P<name>[^/]+)", "firewalls.get"),
        ("DELETE", r"/global/firewalls/(?P<name>[^/]+)", "firewalls.delete"),
    ]
]


@dataclass(frozen=True)
class GCECall:
    """One Compute Engine request the fake answered."""

    #: Wall-clock time (``time.time()``) the request arrived.
    time: float
    #: The API method, e.g. ``instances.insert`` (None for an unknown path).
    action: str | None
    method: str
    path: str
    project: str | None
    zone: str | None
    #: The query parameters (first value of each).
    params: dict[str, str]
    #: The JSON request body (None without one).
    body: Any
    #: The HTTP status of the answer.
    status: int
    #: The error reason of an HTTP error (``notFound``, ``forbidden``...), None on success.
    error: str | None
    #: Whether an injected rule answered it (HTTP error or failed operation).
    fault: bool = False
    #: The name of the operation the answer returned, if any.
    operation: str | None = None


class GCEError(Exception):
    """An HTTP error answer in GCE's JSON shape."""

    def __init__(self, reason: str, message: str | None = None, *, target: str = "",
                 project: str = "", status: int | None = None) -> None:
        code, rpc, default = _HTTP_ERRORS.get(reason, (400, "INVALID_ARGUMENT", reason))
        self.reason = reason
        self.status = status if status is not None else code
        self.rpc = rpc
        self.message = message if message is not None else default.format(
            target=target, project=project)
        super().__init__(self.message)

    def body(self) -> bytes:
        return json.dumps({"error": {
            "code": self.status, "message": self.message,
            "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            "status": self.rpc}}).encode()


class _OperationFailed(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _last(link: str | None) -> str:
    return (link or "").rstrip("/").rsplit("/", 1)[-1]


def ssh_keys_cloud_config(metadata_items: Iterable[dict[str, Any]]) -> str | None:
    """The ``#cloud-config`` users GCE's guest agent would make from an ``ssh-keys`` item.

    Each line ``USER:KEYTYPE KEY [COMMENT]`` adds ``KEY`` to ``USER``'s
    authorized keys; the agent gives those users passwordless sudo. Lines it
    cannot read are skipped. None when the metadata has no usable key.
    """
    keys: dict[str, list[str]] = {}
    for item in metadata_items:
        if item.get("key") not in ("ssh-keys", "sshKeys"):
            continue
        for line in str(item.get("value") or "").splitlines():
            match = _SSH_KEY_LINE.fullmatch(line.strip())
            if match:
                keys.setdefault(match.group(1), []).append(match.group(2).strip())
    if not keys:
        return None
    lines = ["#cloud-config", "users:"]
    for user, user_keys in keys.items():
        lines += [f"  - name: {user}", "    shell: /bin/bash",
                  "    sudo: ALL=(ALL:ALL) NOPASSWD:ALL", "    ssh_authorized_keys:"]
        lines += [f"      - {json.dumps(key)}" for key in user_keys]
    return "\n".join(lines) + "\n"


class FakeGCE:
    """A Compute Engine v1 REST fake on 127.0.0.1:<free port>; see the module docstring.

    ``project``: the project tests use (any project in a path is served).
    ``twins``: a ``TwinHost`` whose sandboxes back the instances (None: no
    twins, addresses are made up). ``catalog_dir``: a catalog directory whose
    ``gcp/vms.csv`` lists the zones and machine types the fake accepts
    (default: the shared catalogs when present; without one any zone and
    machine type is accepted). Use it as a context manager, or call
    :meth:`start` and :meth:`close`; the twin host stays the caller's.
    """

    def __init__(self, *, project: str = DEFAULT_PROJECT, twins: TwinHost | None = None,
                 catalog_dir: Path | None = None) -> None:
        self.project = project
        self.twins = twins
        if catalog_dir is None and (SHARED_CATALOGS / "gcp" / "vms.csv").is_file():
            catalog_dir = SHARED_CATALOGS
        self.catalog_dir = catalog_dir
        self._machine_types = self._load_catalog(catalog_dir)
        #: ``http://127.0.0.1:PORT`` once started.
        self.endpoint = ""
        #: Failures in background work (twin boots, shutdowns), as messages.
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._rules: list[Rule] = []
        self._calls: list[GCECall] = []
        # (project, zone, name) -> instance dict
        self._instances: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._twin_of: dict[tuple[str, str, str], Twin] = {}
        self._firewalls: dict[tuple[str, str], dict[str, Any]] = {}
        # (project, scope, name) -> operation; scope is a zone or "global"
        self._operations: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._requests: dict[tuple[str, str], dict[str, Any]] = {}
        self._public = (f"203.0.113.{n}" for n in itertools.cycle(range(2, 255)))
        self._private = (f"10.128.{n // 250}.{n % 250 + 2}" for n in itertools.count())
        self._workers: list[threading.Thread] = []
        self._server: LoopbackServer | None = None

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> FakeGCE:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeGCE:
        """Start serving on a free loopback port; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeGCE already started")
        self._server = LoopbackServer(self._wsgi, "fakegce")
        self.endpoint = self._server.endpoint
        if self.twins is not None and getattr(self.twins, "on_shutdown", False) is None:
            self.twins.on_shutdown = self.twin_shut_down  # type: ignore[union-attr]
        return self

    def close(self) -> None:
        """Stop the server and wait for background operations (the twin host is the caller's)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.settle()

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until every background operation and shutdown has finished."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                workers = [w for w in self._workers if w.is_alive()]
                self._workers = workers
            if not workers:
                return
            workers[0].join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"operations still running: {workers}")

    # -- what tests use ------------------------------------------------------------------

    def client_options(self) -> dict[str, str]:
        """``client_options`` that point a google-cloud-compute client at this fake."""
        return {"api_endpoint": self.endpoint}

    def env(self) -> dict[str, str]:
        """Settings that name this fake to a subprocess: its project and endpoint.

        The Python client has no endpoint variable of its own (code passes
        ``client_options``); gcloud's ``api_endpoint_overrides/compute`` property
        (``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE``) is the documented one, and
        ``FAKE_GCE_ENDPOINT`` is there for test code to read.
        """
        if not self.endpoint:
            raise RuntimeError("start the FakeGCE first")
        return {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "CLOUDSDK_CORE_PROJECT": self.project,
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"{self.endpoint}/compute/v1/",
            "FAKE_GCE_ENDPOINT": self.endpoint,
        }

    def fail(self, code: str, *, action: str | None = "instances.insert",
             zone: str | None = None, region: str | None = None,
             machine_type: str | None = None, spot: bool | None = None,
             times: int | None = 1, message: str | None = None,
             status: int | None = None) -> Rule:
        """Make matching requests fail with ``code``; returns the rule.

        A code of :data:`OPERATION_ERRORS` (``ZONE_RESOURCE_POOL_EXHAUSTED``,
        ``QUOTA_EXCEEDED``...) is accepted over HTTP and its operation ends
        DONE with that error; any other code is an HTTP error reason
        (``forbidden`` 403, ``required`` 401, ``notFound`` 404...; ``status``
        overrides). ``action`` is the API method (``instances.insert``; None
        matches all); ``spot`` True matches SPOT (or preemptible) inserts.
        """
        if code in OPERATION_ERRORS:
            default_status = OPERATION_ERRORS[code]
        else:
            default_status = _HTTP_ERRORS.get(code, (400,))[0]
        rule = Rule(code, action=action, region=region, zone=zone, instance_type=machine_type,
                    spot=spot, times=times, message=message,
                    status=status if status is not None else default_status)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Remove every rule added by :meth:`fail`."""
        with self._lock:
            self._rules.clear()

    @property
    def calls(self) -> list[GCECall]:
        """Every request answered so far, in the order answered (a copy)."""
        with self._lock:
            return list(self._calls)

    def instances(self) -> list[dict[str, Any]]:
        """Every instance of every project and zone, as GCE renders them (copies)."""
        with self._lock:
            return [json.loads(json.dumps(i)) for i in self._instances.values()]

    def twin(self, name: str, zone: str | None = None,
             project: str | None = None) -> Twin | None:
        """The twin backing instance ``name`` (None without one)."""
        with self._lock:
            return self._twin_of.get(self._key(name, zone, project))

    def preempt(self, name: str, zone: str | None = None, project: str | None = None) -> None:
        """GCE reclaims SPOT instance ``name``: TERMINATED, or deleted with action DELETE.

        A STOP instance's twin is stopped (its disk, the twin's files, stays,
        so it can start again, as on GCE); a deleted one's twin is terminated.
        KeyError for an unknown instance, ValueError for one that is not SPOT.
        """
        with self._lock:
            key = self._key(name, zone, project)
            instance = self._instances[key]
            if not _is_spot(instance):
                raise ValueError(f"{name} is a standard instance; GCE preempts only SPOT VMs")
            if instance["status"] == "TERMINATED":
                return
            twin = self._twin_of.get(key)
            action = instance.get("scheduling", {}).get("instanceTerminationAction", "STOP")
            if action == "DELETE":
                del self._instances[key]
                self._twin_of.pop(key, None)
            else:
                self._set_stopped(instance)
            self._changed.notify_all()
        if twin is not None:
            twin.terminate() if action == "DELETE" else twin.stop()

    def twin_shut_down(self, twin: Twin) -> None:
        """The twin host's ``on_shutdown``: the guest powered off, so the instance is TERMINATED."""
        self._spawn(self._apply_shutdown, twin)

    # -- serving --------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started = time.time()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        params = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        action, match = None, None
        for route_method, pattern, route_action in _ROUTES:
            found = pattern.match(path)
            if found and route_method == method:
                action, match = route_action, found.groupdict()
                break
        body: Any = None
        status, error, fault, operation = 200, None, False, None
        try:
            if action is None or match is None:
                raise GCEError("notFound", f"The requested URL {path} was not found on this "
                                           "server.", status=404)
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise GCEError("parseError", f"Invalid JSON payload received. {exc}",
                                   status=400) from None
            answer, fault = self._handle(action, match, params, body)
            operation = answer.get("name") if answer.get("kind") == "compute#operation" else None
            out = json.dumps(answer).encode()
        except GCEError as exc:
            status, error, out = exc.status, exc.reason, exc.body()
            fault = fault or getattr(exc, "fault", False)
        except Exception as exc:  # a bug in the fake: answer as GCE's internal error
            log.exception("FakeGCE: %s %s", method, path)
            gce = GCEError("internalError", f"Internal error in FakeGCE: {exc!r}")
            status, error, out = gce.status, gce.reason, gce.body()
        call = GCECall(started, action, method, path, (match or {}).get("project"),
                       (match or {}).get("zone"), params, body, status, error, fault, operation)
        with self._lock:
            self._calls.append(call)
        start_response(f"{status} {_phrase(status)}",
                       [("Content-Type", "application/json; charset=UTF-8"),
                        ("Content-Length", str(len(out)))])
        return [out]

    def _handle(self, action: str, match: dict[str, str], params: dict[str, str],
                body: Any) -> tuple[dict[str, Any], bool]:
        project, zone, name = match["project"], match.get("zone"), match.get("name")
        if zone is not None and self._machine_types is not None \
                and zone not in self._machine_types:
            raise GCEError("notFound", target=f"projects/{project}/zones/{zone}")
        facts = RequestFacts(action, zone.rsplit("-", 1)[0] if zone else None, zone,
                             _last((body or {}).get("machineType")) or None,
                             _is_spot(body or {}) if action == "instances.insert" else False)
        rule = self._take_rule(facts)
        op_fault: _OperationFailed | None = None
        if rule is not None:
            if rule.code in OPERATION_ERRORS:
                text = rule.message or _OPERATION_MESSAGES.get(rule.code, rule.code).format(
                    zone=zone, region=facts.region)
                op_fault = _OperationFailed(rule.code, text, rule.status)
            else:
                target = f"projects/{project}" + (f"/zones/{zone}" if zone else "") + \
                    (f"/{action.split('.')[0]}/{name}" if name else "")
                exc = GCEError(rule.code, rule.message, target=target, project=project,
                               status=rule.status)
                exc.fault = True  # type: ignore[attr-defined]
                raise exc
        handler = getattr(self, "_" + action.replace(".", "_"))
        answer = handler(project, zone, name, match, params, body, op_fault)
        return answer, rule is not None

    def _take_rule(self, facts: RequestFacts) -> Rule | None:
        with self._lock:
            rules = list(self._rules)
        return next((rule for rule in rules if rule.take(facts)), None)

    # -- instances ------------------------------------------------------------------------

    def _instances_insert(self, project, zone, _name, _match, params, body, op_fault):
        if not isinstance(body, dict):
            raise GCEError("required", "Required field 'resource' not specified", status=400)
        name = body.get("name")
        request_id = params.get("requestId")
        with self._lock:
            if request_id and (project, request_id) in self._requests:
                return dict(self._requests[(project, request_id)])
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise GCEError("invalid", f"Invalid value for field 'resource.name': '{name}'. Must be"
                                      " a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        machine_type = _last(body.get("machineType"))
        if not machine_type:
            raise GCEError("invalid", "Invalid value for field 'resource.machineType': ''.")
        known = (self._machine_types or {}).get(zone)
        if known is not None and machine_type not in known:
            raise GCEError("invalid", f"Invalid value for field 'resource.machineType': "
                                      f"'{body.get('machineType')}'. Machine type with name "
                                      f"'{machine_type}' does not exist in zone '{zone}'.")
        key = (project, zone, name)
        with self._lock:
            if request_id and (project, request_id) in self._requests:
                return dict(self._requests[(project, request_id)])
            if key in self._instances:
                raise GCEError("alreadyExists",
                               target=f"projects/{project}/zones/{zone}/instances/{name}")
            instance = self._new_instance(project, zone, body)
            self._instances[key] = instance
            op = self._new_operation(project, zone, "insert", instance)
            if request_id:
                self._requests[(project, request_id)] = op
            answer = dict(op)
        self._spawn(self._boot, key, instance, op, op_fault)
        return answer

    def _instances_get(self, project, zone, name, *_):
        with self._lock:
            return json.loads(json.dumps(self._instance(project, zone, name)))

    def _instances_list(self, project, zone, _name, _match, params, *_):
        clauses = _parse_filter(params.get("filter", ""))
        with self._lock:
            items = [json.loads(json.dumps(i)) for (p, z, _), i in sorted(self._instances.items())
                     if p == project and z == zone and _matches(i, clauses)]
        answer = {"kind": "compute#instanceList", "id": f"projects/{project}/zones/{zone}/instances",
                  "selfLink": self._link(project, zone, "instances")}
        if items:
            answer["items"] = items
        return answer

    def _instances_aggregatedList(self, project, _zone, _name, _match, params, *_):
        clauses = _parse_filter(params.get("filter", ""))
        items: dict[str, dict[str, list[dict[str, Any]]]] = {}
        with self._lock:
            for (p, z, _), i in sorted(self._instances.items()):
                if p == project and _matches(i, clauses):
                    items.setdefault(f"zones/{z}", {"instances": []})["instances"].append(
                        json.loads(json.dumps(i)))
        return {"kind": "compute#instanceAggregatedList",
                "id": f"projects/{project}/aggregated/instances", "items": items,
                "selfLink": f"{self.endpoint}/compute/v1/projects/{project}/aggregated/instances"}

    def _instances_delete(self, project, zone, name, _match, params, _body, op_fault):
        with self._lock:
            instance = self._instance(project, zone, name)
            op = self._new_operation(project, zone, "delete", instance)
            if instance["status"] not in ("TERMINATED",):
                instance["status"] = "STOPPING"
            answer = dict(op)
        self._spawn(self._delete, (project, zone, name), instance, op, op_fault)
        return answer

    def _instances_stop(self, project, zone, name, _match, params, _body, op_fault):
        with self._lock:
            instance = self._instance(project, zone, name)
            op = self._new_operation(project, zone, "stop", instance)
            if instance["status"] != "TERMINATED":
                instance["status"] = "STOPPING"
            answer = dict(op)
        self._spawn(self._stop, (project, zone, name), instance, op, op_fault)
        return answer

    def _instances_start(self, project, zone, name, _match, params, _body, op_fault):
        with self._lock:
            instance = self._instance(project, zone, name)
            if instance["status"] not in ("TERMINATED", "RUNNING"):
                raise GCEError("resourceNotReady",
                               target=f"projects/{project}/zones/{zone}/instances/{name}")
            op = self._new_operation(project, zone, "start", instance)
            answer = dict(op)
        self._spawn(self._start, (project, zone, name), instance, op, op_fault)
        return answer

    def _instances_setLabels(self, project, zone, name, _match, _params, body, op_fault):
        body = body or {}
        with self._lock:
            instance = self._instance(project, zone, name)
            if body.get("labelFingerprint") != instance["labelFingerprint"]:
                raise GCEError("conditionNotMet", status=412)
            instance["labels"] = dict(body.get("labels") or {})
            instance["labelFingerprint"] = _fingerprint()
            op = self._new_operation(project, zone, "setLabels", instance)
            self._finish(op, op_fault)
            return dict(op)

    def _instances_setMetadata(self, project, zone, name, _match, _params, body, op_fault):
        body = body or {}
        with self._lock:
            instance = self._instance(project, zone, name)
            if body.get("fingerprint") != instance["metadata"]["fingerprint"]:
                raise GCEError("conditionNotMet", "Supplied fingerprint does not match current "
                                                  "metadata fingerprint.", status=412)
            instance["metadata"] = {"kind": "compute#metadata", "fingerprint": _fingerprint(),
                                    "items": list(body.get("items") or [])}
            op = self._new_operation(project, zone, "setMetadata", instance)
            self._finish(op, op_fault)
            return dict(op)

    # -- operations -----------------------------------------------------------------------

    def _zoneOperations_get(self, project, zone, _name, match, *_):
        with self._lock:
            return dict(self._operation(project, zone, match["op"]))

    def _zoneOperations_wait(self, project, zone, _name, match, *_):
        return self._wait(project, zone, match["op"])

    def _globalOperations_get(self, project, _zone, _name, match, *_):
        with self._lock:
            return dict(self._operation(project, "global", match["op"]))

    def _globalOperations_wait(self, project, _zone, _name, match, *_):
        return self._wait(project, "global", match["op"])

    def _wait(self, project: str, scope: str, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        with self._lock:
            op = self._operation(project, scope, name)
            while op["status"] != "DONE" and time.monotonic() < deadline:
                self._changed.wait(min(1.0, deadline - time.monotonic()))
            return dict(op)

    # -- firewalls ------------------------------------------------------------------------

    def _firewalls_insert(self, project, _zone, _name, _match, params, body, op_fault):
        if not isinstance(body, dict):
            raise GCEError("required", "Required field 'resource' not specified", status=400)
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise GCEError("invalid", f"Invalid value for field 'resource.name': '{name}'.")
        request_id = params.get("requestId")
        with self._lock:
            if request_id and (project, request_id) in self._requests:
                return dict(self._requests[(project, request_id)])
            if (project, name) in self._firewalls:
                raise GCEError("alreadyExists", target=f"projects/{project}/global/firewalls/{name}")
            rule = json.loads(json.dumps(body))
            rule.update(kind="compute#firewall", id=str(next(_IDS)), creationTimestamp=_now(),
                        selfLink=self._link(project, None, "firewalls", name))
            rule.setdefault("network", self._link(project, None, "networks", "default"))
            rule.setdefault("direction", "INGRESS")
            rule.setdefault("priority", 1000)
            rule.setdefault("disabled", False)
            if rule["direction"] == "INGRESS" and "sourceRanges" not in rule \
                    and "sourceTags" not in rule:
                rule["sourceRanges"] = ["0.0.0.0/0"]
            op = self._new_operation(project, None, "insert", rule)
            if op_fault is None:
                self._firewalls[(project, name)] = rule
            self._finish(op, op_fault)
            if request_id:
                self._requests[(project, request_id)] = op
            return dict(op)

    def _firewalls_get(self, project, _zone, name, *_):
        with self._lock:
            rule = self._firewalls.get((project, name))
            if rule is None:
                raise GCEError("notFound", target=f"projects/{project}/global/firewalls/{name}")
            return json.loads(json.dumps(rule))

    def _firewalls_list(self, project, _zone, _name, _match, params, *_):
        clauses = _parse_filter(params.get("filter", ""))
        with self._lock:
            items = [json.loads(json.dumps(r)) for (p, _), r in sorted(self._firewalls.items())
                     if p == project and _matches(r, clauses)]
        answer = {"kind": "compute#firewallList", "id": f"projects/{project}/global/firewalls",
                  "selfLink": self._link(project, None, "firewalls")}
        if items:
            answer["items"] = items
        return answer

    def _firewalls_delete(self, project, _zone, name, _match, _params, _body, op_fault):
        with self._lock:
            rule = self._firewalls.get((project, name))
            if rule is None:
                raise GCEError("notFound", target=f"projects/{project}/global/firewalls/{name}")
            op = self._new_operation(project, None, "delete", rule)
            if op_fault is None:
                del self._firewalls[(project, name)]
            self._finish(op, op_fault)
            return dict(op)

    # -- state ----------------------------------------------------------------------------

    def _key(self, name: str, zone: str | None, project: str | None) -> tuple[str, str, str]:
        project = project or self.project
        if zone is None:
            zones = [z for (p, z, n) in self._instances if p == project and n == name]
            zones += [z for (p, z, n) in self._twin_of if p == project and n == name]
            if not zones:
                raise KeyError(name)
            zone = zones[0]
        return (project, zone, name)

    def _link(self, project: str, zone: str | None, kind: str, name: str | None = None) -> str:
        scope = f"zones/{zone}" if zone else "global"
        return (f"{self.endpoint}/compute/v1/projects/{project}/{scope}/{kind}"
                + (f"/{name}" if name else ""))

    def _zone_link(self, project: str, zone: str) -> str:
        return f"{self.endpoint}/compute/v1/projects/{project}/zones/{zone}"

    def _instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        instance = self._instances.get((project, zone, name))
        if instance is None:
            raise GCEError("notFound", target=f"projects/{project}/zones/{zone}/instances/{name}")
        return instance

    def _operation(self, project: str, scope: str, name: str) -> dict[str, Any]:
        op = self._operations.get((project, scope, name))
        if op is None:
            where = f"zones/{scope}" if scope != "global" else "global"
            raise GCEError("notFound", target=f"projects/{project}/{where}/operations/{name}")
        return op

    def _new_instance(self, project: str, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        instance = json.loads(json.dumps(body))
        name = instance["name"]
        nics = instance.get("networkInterfaces") or [{}]
        for index, nic in enumerate(nics):
            nic.setdefault("network", self._link(project, None, "networks", "default"))
            nic.update(kind="compute#networkInterface", name=f"nic{index}")
            for config in nic.get("accessConfigs") or []:
                config.setdefault("type", "ONE_TO_ONE_NAT")
                config.setdefault("name", "External NAT")
                config.setdefault("networkTier", "PREMIUM")
                config["kind"] = "compute#accessConfig"
        metadata = instance.get("metadata") or {}
        instance.update(
            kind="compute#instance", id=str(next(_IDS)), creationTimestamp=_now(),
            status="PROVISIONING", zone=self._zone_link(project, zone),
            selfLink=self._link(project, zone, "instances", name),
            machineType=self._link(project, zone, "machineTypes", _last(body["machineType"])),
            networkInterfaces=nics, labels=dict(instance.get("labels") or {}),
            labelFingerprint=_fingerprint(), cpuPlatform="Unknown CPU Platform",
            metadata={"kind": "compute#metadata", "fingerprint": _fingerprint(),
                      "items": list(metadata.get("items") or [])},
            scheduling={"onHostMaintenance": "MIGRATE", "automaticRestart": True,
                        "preemptible": False, "provisioningModel": "STANDARD",
                        **(instance.get("scheduling") or {})})
        if _is_spot(instance):
            instance["scheduling"].update(onHostMaintenance="TERMINATE", automaticRestart=False)
            instance["scheduling"].setdefault("instanceTerminationAction", "STOP")
        return instance

    def _new_operation(self, project: str, zone: str | None, kind: str,
                       target: dict[str, Any]) -> dict[str, Any]:
        """A PENDING operation on ``target`` (hold the lock)."""
        op_id = str(next(_IDS))
        name = f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}"
        scope = zone or "global"
        op = {"kind": "compute#operation", "id": op_id, "name": name, "operationType": kind,
              "targetLink": target["selfLink"], "targetId": target["id"], "status": "RUNNING",
              "user": "fake@skyk.invalid", "progress": 0, "insertTime": _now(),
              "startTime": _now(), "selfLink": self._link(project, zone, "operations", name)}
        if zone:
            op["zone"] = self._zone_link(project, zone)
        self._operations[(project, scope, name)] = op
        return op

    def _finish(self, op: dict[str, Any], failure: _OperationFailed | None) -> None:
        """Mark ``op`` DONE, with ``failure`` as its error (hold the lock)."""
        if failure is not None:
            op["error"] = {"errors": [{"code": failure.code, "message": failure.message}]}
            op["httpErrorStatusCode"] = failure.status
            op["httpErrorMessage"] = _phrase(failure.status).upper()
        op.update(status="DONE", progress=100, endTime=_now())
        self._changed.notify_all()

    def _spawn(self, work: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                work(*args)
            except Exception as exc:
                log.exception("FakeGCE background work failed")
                with self._lock:
                    self.errors.append(f"{work.__name__}: {exc!r}")

        thread = threading.Thread(target=run, daemon=True, name=f"fakegce-{work.__name__}")
        with self._lock:
            self._workers.append(thread)
        thread.start()

    def _set_stopped(self, instance: dict[str, Any]) -> None:
        instance["status"] = "TERMINATED"
        instance["lastStopTimestamp"] = _now()
        for nic in instance["networkInterfaces"]:
            for config in nic.get("accessConfigs") or []:
                config.pop("natIP", None)

    def _set_running(self, instance: dict[str, Any], private_ip: str, public_ip: str) -> None:
        nic = instance["networkInterfaces"][0]
        nic["networkIP"] = private_ip
        for config in nic.get("accessConfigs") or []:
            config["natIP"] = public_ip
        instance["status"] = "RUNNING"
        instance["lastStartTimestamp"] = _now()

    # -- background work -------------------------------------------------------------------

    def _boot(self, key, instance, op, failure: _OperationFailed | None) -> None:
        if failure is not None:
            with self._lock:
                if self._instances.get(key) is instance:
                    del self._instances[key]
                self._finish(op, failure)
            return
        with self._lock:
            instance["status"] = "STAGING"
            self._changed.notify_all()
        twin = None
        if self.twins is not None:
            user_data = ssh_keys_cloud_config(instance["metadata"]["items"])
            try:
                twin = self.twins.create(f"gce-{instance['id']}", user_data)
            except Exception as exc:
                with self._lock:
                    self.errors.append(f"instances.insert: twin of {key[2]}: {exc!r}")
                    if self._instances.get(key) is instance:
                        del self._instances[key]
                    self._finish(op, _OperationFailed(
                        "INTERNAL_ERROR", f"Internal error (node twin: {exc})", 500))
                return
        with self._lock:
            if self._instances.get(key) is not instance:  # deleted while booting
                self._finish(op, None)
                orphan = twin
            else:
                orphan = None
                if twin is not None:
                    self._twin_of[key] = twin
                    self._set_running(instance, twin.private_ip, twin.public_ip or "")
                else:
                    self._set_running(instance, next(self._private), next(self._public))
                self._finish(op, None)
        if orphan is not None:
            orphan.terminate()

    def _stop(self, key, instance, op, failure) -> None:
        if failure is None:
            with self._lock:
                twin = self._twin_of.get(key)
            if twin is not None:
                twin.stop()
        with self._lock:
            if failure is None and self._instances.get(key) is instance:
                self._set_stopped(instance)
            self._finish(op, failure)

    def _start(self, key, instance, op, failure) -> None:
        with self._lock:
            if failure is not None or instance["status"] == "RUNNING":
                self._finish(op, failure)
                return
            instance["status"] = "STAGING"
            twin = self._twin_of.get(key)
        if twin is not None:
            try:
                twin.start()
            except Exception as exc:
                with self._lock:
                    self.errors.append(f"instances.start: twin of {key[2]}: {exc!r}")
                    self._set_stopped(instance)
                    self._finish(op, _OperationFailed(
                        "INTERNAL_ERROR", f"Internal error (node twin: {exc})", 500))
                return
        with self._lock:
            private = instance["networkInterfaces"][0].get("networkIP") or next(self._private)
            public = twin.public_ip if twin is not None else next(self._public)
            self._set_running(instance, private, public or "")
            self._finish(op, None)

    def _delete(self, key, instance, op, failure) -> None:
        if failure is None:
            with self._lock:
                twin = self._twin_of.pop(key, None)
            if twin is not None:
                twin.terminate()
        with self._lock:
            if failure is None and self._instances.get(key) is instance:
                del self._instances[key]
            self._finish(op, failure)

    def _apply_shutdown(self, twin: Twin) -> None:
        with self._lock:
            key = next((k for k, t in self._twin_of.items() if t is twin), None)
            instance = self._instances.get(key) if key else None
            if instance is None or instance["status"] not in ("RUNNING", "STAGING"):
                return
            instance["status"] = "STOPPING"
        twin.stop()
        with self._lock:
            if self._instances.get(key) is instance:
                self._set_stopped(instance)
                self._changed.notify_all()

    @staticmethod
    def _load_catalog(catalog_dir: Path | None) -> dict[str, set[str]] | None:
        """Machine types by zone from ``gcp/vms.csv`` (None without a catalog)."""
        if catalog_dir is None:
            return None
        path = Path(catalog_dir) / "gcp" / "vms.csv"
        if not path.is_file():
            return None
        zones: dict[str, set[str]] = {}
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("AvailabilityZone") and row.get("InstanceType"):
                    zones.setdefault(row["AvailabilityZone"], set()).add(row["InstanceType"])
        return zones


# -- helpers --------------------------------------------------------------------------------

def _is_spot(resource: dict[str, Any]) -> bool:
    scheduling = resource.get("scheduling") or {}
    return scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))


def _fingerprint() -> str:
    import base64

    return base64.b64encode(secrets.token_bytes(8)).decode()


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_CLAUSE = re.compile(r"\(?\s*([A-Za-z][\w.-]*)\s*(=|!=|:|eq|ne)\s*(\"[^\"]*\"|'[^']*'|[^\s()]+)"
                     r"\s*\)?")


def _parse_filter(text: str) -> list[tuple[str, str, str]]:
    """``FIELD = VALUE`` clauses joined by AND or spaces (400 for anything else)."""
    clauses, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _CLAUSE.match(text, position)
        if not match:
            raise GCEError("invalid", f"Invalid list filter expression: {text!r}")
        field_name, op, value = match.groups()
        if value[:1] in "\"'":
            value = value[1:-1]
        clauses.append((field_name, {"eq": "=", "ne": "!="}.get(op, op), value))
        position = match.end()
        rest = re.match(r"\s*(?:AND\s+)?", text[position:])
        position += rest.end() if rest else 0
    return clauses


def _matches(resource: dict[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    for field_name, op, value in clauses:
        current: Any = resource
        for part in field_name.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        text = None if current is None else (str(current).lower() if isinstance(current, bool)
                                             else str(current))
        if op == ":":
            ok = text is not None and (value == "*" or text == value)
        elif op == "=":
            ok = text == value
        else:
            ok = text != value
        if not ok:
            return False
    return True

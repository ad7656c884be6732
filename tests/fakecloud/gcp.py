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
- **images** (global, any image project): get, and getFromFamily
  (``global/images/family/{family}``): the images the catalog's
  ``gcp/images.csv`` names, a few public ones, and any :meth:`FakeGCE.add_image`
  adds; an insert booting another image is refused (404 ``notFound``);
- **disks** (zonal): list, get, delete; an instance's boot disk is made from
  its ``initializeParams`` (``diskSizeGb``, ``diskType``, ``sourceImage``)
  and deleted with it when ``autoDelete``;
- **credentials**: every Compute request needs ``Authorization: Bearer``
  with a token the fake issued: an access token from its OAuth2 token
  endpoint (:attr:`FakeGCE.token_url`, the JWT-bearer grant google-auth's
  service-account credentials post to the key file's ``token_uri``), or a
  JWT self-signed with a key it issued (what the Google client libraries
  send for service accounts, AIP-4111); anything else is 401 ``authError``.
  :meth:`FakeGCE.write_key` writes a service-account key file, and
  ``env()`` names one in ``GOOGLE_APPLICATION_CREDENTIALS``;
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
- **preemption records**: :meth:`FakeGCE.preempt` leaves a DONE zone
  operation ``compute.instances.preempted`` on the instance (as GCE does),
  which zoneOperations.list (``filter``) serves;
- **quota errors**: ``fail("QUOTA_EXCEEDED", quota=METRIC)`` ends the
  operation with GCE's message (``Quota 'GPUS_ALL_REGIONS' exceeded.  Limit:
  0.0 globally.``) and ``errorDetails[].quotaInfo`` (metric, limit name, and
  the region dimension of a regional quota);
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
import shutil
import tempfile
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
#: The grant type of a service account's token request (RFC 7523).
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience google-auth puts in a service account's grant assertion.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
#: Public images every project may boot (``project/name``, family), beside the catalog's.
PUBLIC_IMAGES = (("debian-cloud/debian-12-bookworm-v20250101", "debian-12"),
                 ("ubuntu-os-cloud/ubuntu-2204-jammy-v20250101", "ubuntu-2204-lts"))
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
        ("GET", r"/zones/(?P<zone>[^/]+)/operations", "zoneOperations.list"),
        ("GET", r"/zones/(?P<zone>[^/]+)/disks", "disks.list"),
        ("GET", r"/zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)", "disks.get"),
        ("DELETE", r"/zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)", "disks.delete"),
        ("GET", r"/global/images/family/(?P<family>[^/]+)", "images.getFromFamily"),
        ("GET", r"/global/images/(?P<name>[^/]+)", "images.get"),
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
    #: Seconds the answer took.
    duration: float = 0.0


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
    def __init__(self, code: str, message: str, status: int,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.details = details


def quota_failure(metric: str, region: str | None) -> tuple[str, list[dict[str, Any]]]:
    """GCE's message and ``errorDetails`` for quota ``metric`` (``CPUS``, ``GPUS_ALL_REGIONS``...).

    Metrics named ``*_ALL_REGIONS`` are project-wide ("globally"); the rest
    count per region, and their ``quotaInfo`` carries the region dimension.
    """
    project_wide = metric.endswith("_ALL_REGIONS") or region is None
    where = "globally" if project_wide else f"in region {region}"
    info: dict[str, Any] = {
        "metricName": f"compute.googleapis.com/{metric.lower()}",
        "limitName": metric.replace("_", "-") + ("-per-project" if project_wide
                                                 else "-per-project-region"),
        "limit": 0.0}
    if not project_wide:
        info["dimensions"] = {"region": region}
    return f"Quota '{metric}' exceeded.  Limit: 0.0 {where}.", [{"quotaInfo": info}]


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


def write_service_account_key(path: Path, project: str, endpoint: str) -> tuple[str, str]:
    """Write a service-account key file whose URIs point at ``endpoint``; return (key id, public PEM).

    The token endpoint is ``{endpoint}/token``: whoever serves it grants
    tokens to JWTs signed with the keys it registered (:func:`grant_token`).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = secrets.token_hex(20)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    email = f"skyk-test@{project}.iam.gserviceaccount.com"
    info = {"type": "service_account", "project_id": project, "private_key_id": key_id,
            "private_key": private, "client_email": email, "client_id": str(next(_IDS)),
            "auth_uri": f"{endpoint}/auth", "token_uri": f"{endpoint}/token",
            "auth_provider_x509_cert_url": f"{endpoint}/certs",
            "universe_domain": "googleapis.com"}
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)
    return key_id, public


def verified_claims(assertion: str, keys: dict[str, str]) -> dict | None:
    """The claims of a JWT signed with one of ``keys`` (key id -> public PEM), unexpired; else None."""
    from google.auth import jwt

    try:
        return jwt.decode(assertion, certs=keys, clock_skew_in_seconds=60)
    except Exception:  # any malformed, unsigned, expired or foreign token  # noqa: BLE001
        return None


def grant_token(raw: bytes, keys: dict[str, str], token_url: str) -> tuple[int, str, bytes]:
    """Answer an OAuth2 token request (the JWT-bearer grant): (status, token or "", JSON body).

    The assertion must be signed with one of ``keys`` (key id -> public PEM);
    a key never issued, or deleted, is refused as Google refuses it
    (400 ``invalid_grant``).
    """
    form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
    if form.get("grant_type") != JWT_BEARER:
        return 400, "", json.dumps({"error": "unsupported_grant_type",
                                    "error_description": "Invalid grant_type."}).encode()
    claims = verified_claims(form.get("assertion", ""), keys)
    # google-auth names Google's token endpoint as the audience, whatever token_uri says.
    if claims is None or claims.get("aud") not in (token_url, GOOGLE_TOKEN_URL):
        return 400, "", json.dumps({"error": "invalid_grant",
                                    "error_description": "Invalid JWT Signature."}).encode()
    token = "ya29.fake-" + secrets.token_urlsafe(24)
    return 200, token, json.dumps({"access_token": token, "expires_in": 3599,
                                   "token_type": "Bearer"}).encode()


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
        # (project, zone, name) -> disk dict
        self._disks: dict[tuple[str, str, str], dict[str, Any]] = {}
        # (image project, name) -> image dict
        self._images: dict[tuple[str, str], dict[str, Any]] = {}
        for path, family in PUBLIC_IMAGES:
            self.add_image(path, family=family)
        for path in self._catalog_images(catalog_dir):
            self.add_image(path)
        # Quota metric of each QUOTA_EXCEEDED rule.
        self._quota_of: dict[Rule, str] = {}
        # Service-account keys issued (key id -> public key PEM) and access tokens issued.
        self._keys: dict[str, str] = {}
        self._tokens: set[str] = set()
        self._key_dir: Path | None = None
        #: The key file ``env()`` names (written by :meth:`start`).
        self.key_file: Path | None = None
        #: How many token requests the token endpoint answered (granted or not).
        self.token_requests = 0
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
        for (project, name), image in self._images.items():
            image["selfLink"] = f"{self.endpoint}/compute/v1/projects/{project}/global/images/{name}"
        self._key_dir = Path(tempfile.mkdtemp(prefix="fakegce-"))
        self.key_file = self.write_key(self._key_dir / "service-account.json")
        if self.twins is not None and getattr(self.twins, "on_shutdown", False) is None:
            self.twins.on_shutdown = self.twin_shut_down  # type: ignore[union-attr]
        return self

    def close(self) -> None:
        """Stop the server and wait for background operations (the twin host is the caller's)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.settle()
        if self._key_dir is not None:
            shutil.rmtree(self._key_dir, ignore_errors=True)
            self._key_dir = None

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

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint (a key file's ``token_uri``)."""
        return f"{self.endpoint}/token"

    def write_key(self, path: Path, *, project: str | None = None,
                  registered: bool = True) -> Path:
        """Write a service-account key file with a fresh RSA key; returns ``path``.

        Its ``token_uri`` is this fake's token endpoint and ``project_id`` the
        project. ``registered=False`` writes a key the fake never issued (a
        deleted key, say): well formed, but every request made with it is refused.
        """
        if not self.endpoint:
            raise RuntimeError("start the FakeGCE first")
        key_id, public = write_service_account_key(Path(path), project or self.project, self.endpoint)
        if registered:
            with self._lock:
                self._keys[key_id] = public
        return Path(path)

    def revoke_tokens(self) -> None:
        """Forget every access token issued (they expired): clients must get new ones."""
        with self._lock:
            self._tokens.clear()

    def add_image(self, path: str, *, family: str | None = None) -> dict[str, Any]:
        """Make image ``path`` (``[projects/]PROJECT/[global/images/]NAME``) bootable; returns it."""
        parts = [p for p in path.split("/") if p not in ("projects", "global", "images")]
        project, name = parts[0], parts[-1]
        image = {"kind": "compute#image", "id": str(next(_IDS)), "name": name,
                 "creationTimestamp": _now(), "status": "READY", "diskSizeGb": "10",
                 "sourceType": "RAW", "architecture": "X86_64",
                 "selfLink": f"{self.endpoint or 'https://compute.invalid'}/compute/v1/projects/"
                             f"{project}/global/images/{name}"}
        if family:
            image["family"] = family
        self._images[(project, name)] = image
        return image

    def disks(self) -> list[dict[str, Any]]:
        """Every disk of every project and zone, as GCE renders them (copies)."""
        with self._lock:
            return [json.loads(json.dumps(d)) for d in self._disks.values()]

    def firewalls(self) -> list[dict[str, Any]]:
        """Every firewall rule of every project, as GCE renders them (copies)."""
        with self._lock:
            return [json.loads(json.dumps(r)) for r in self._firewalls.values()]

    def operations(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every operation (of ``operationType`` ``kind``, if given), as GCE renders them."""
        with self._lock:
            return [dict(op) for op in self._operations.values()
                    if kind is None or op["operationType"] == kind]

    def busy_spans(self) -> list[tuple[float, float]]:
        """When the fake worked (``time.time()`` pairs): each request it answered and each
        operation from its insert to its end (see :mod:`fakecloud.timing`)."""
        with self._lock:
            spans = [(c.time, c.time + c.duration) for c in self._calls]
            ops = [op for op in self._operations.values() if op.get("endTime")]
        return spans + [(datetime.fromisoformat(op["insertTime"]).timestamp(),
                         datetime.fromisoformat(op["endTime"]).timestamp()) for op in ops]

    def env(self) -> dict[str, str]:
        """Settings that name this fake to a subprocess: its project, endpoint and credentials.

        The Python client has no endpoint variable of its own (code passes
        ``client_options``); gcloud's ``api_endpoint_overrides/compute`` property
        (``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE``) is the documented one, and
        ``FAKE_GCE_ENDPOINT`` is there for test code to read.
        """
        if not self.endpoint:
            raise RuntimeError("start the FakeGCE first")
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.key_file),
            "GOOGLE_CLOUD_PROJECT": self.project,
            "CLOUDSDK_CORE_PROJECT": self.project,
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"{self.endpoint}/compute/v1/",
            "FAKE_GCE_ENDPOINT": self.endpoint,
        }

    def fail(self, code: str, *, action: str | None = "instances.insert",
             zone: str | None = None, region: str | None = None,
             machine_type: str | None = None, spot: bool | None = None,
             times: int | None = 1, message: str | None = None,
             status: int | None = None, quota: str | None = None) -> Rule:
        """Make matching requests fail with ``code``; returns the rule.

        A code of :data:`OPERATION_ERRORS` (``ZONE_RESOURCE_POOL_EXHAUSTED``,
        ``QUOTA_EXCEEDED``...) is accepted over HTTP and its operation ends
        DONE with that error; any other code is an HTTP error reason
        (``forbidden`` 403, ``required`` 401, ``notFound`` 404...; ``status``
        overrides). ``action`` is the API method (``instances.insert``; None
        matches all); ``spot`` True matches SPOT (or preemptible) inserts.
        ``quota`` names the metric a ``QUOTA_EXCEEDED`` reports (default
        ``CPUS``, counted per region; ``GPUS_ALL_REGIONS`` is project-wide).
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
            if code == "QUOTA_EXCEEDED":
                self._quota_of[rule] = quota or "CPUS"
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
                self._drop_disks(instance)
            else:
                self._set_stopped(instance)
            # GCE records the preemption as a system operation on the instance.
            op = self._new_operation(key[0], key[1], "compute.instances.preempted", instance)
            op.update(user="system", statusMessage="Instance was preempted.")
            self._finish(op, None)
        if twin is not None:
            twin.terminate() if action == "DELETE" else twin.stop()

    def twin_shut_down(self, twin: Twin) -> None:
        """The twin host's ``on_shutdown``: the guest powered off, so the instance is TERMINATED."""
        self._spawn(self._apply_shutdown, twin)

    # -- serving --------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started, clock = time.time(), time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        params = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        if method == "POST" and path == "/token":
            status, out = self._token(raw)
            start_response(f"{status} {_phrase(status)}",
                           [("Content-Type", "application/json; charset=UTF-8"),
                            ("Content-Length", str(len(out)))])
            return [out]
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
            self._authenticate(environ.get("HTTP_AUTHORIZATION", ""))
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
                       (match or {}).get("zone"), params, body, status, error, fault, operation,
                       time.perf_counter() - clock)
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
                details = None
                if rule in self._quota_of:
                    quota_text, details = quota_failure(self._quota_of[rule], facts.region)
                    text = rule.message or quota_text
                op_fault = _OperationFailed(rule.code, text, rule.status, details)
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

    def _token(self, raw: bytes) -> tuple[int, bytes]:
        """The OAuth2 token endpoint: an access token for a JWT signed with an issued key."""
        with self._lock:
            self.token_requests += 1
            keys = dict(self._keys)
        status, token, body = grant_token(raw, keys, self.token_url)
        if token:
            with self._lock:
                self._tokens.add(token)
        return status, body

    def _verified_claims(self, assertion: str) -> dict | None:
        """The claims of a JWT signed with a key the fake issued, unexpired; else None."""
        with self._lock:
            keys = dict(self._keys)
        return verified_claims(assertion, keys)

    def _authenticate(self, header: str) -> None:
        """Refuse (401) a request without a token the fake issued or a JWT of an issued key."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GCEError("required", "Request is missing required authentication credential."
                           " Expected OAuth 2 access token, login cookie or other valid"
                           " authentication credential.")
        with self._lock:
            if token in self._tokens:
                return
        if token.count(".") == 2 and self._verified_claims(token) is not None:
            return
        raise GCEError("authError", "Request had invalid authentication credentials. Expected"
                       " OAuth 2 access token, login cookie or other valid authentication"
                       " credential.")

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
            self._attach_new_disks(project, zone, instance)
            self._instances[key] = instance
            op = self._new_operation(project, zone, "insert", instance)
            if request_id:
                self._requests[(project, request_id)] = op
            answer = dict(op)
        self._spawn(self._boot, key, instance, op, op_fault)
        return answer

    def _attach_new_disks(self, project: str, zone: str, instance: dict[str, Any]) -> None:
        """Make the disks ``instance`` asks for with ``initializeParams``, and attach them.

        Checks everything first (hold the lock): an unknown image or a disk
        name in use refuses the insert before anything is made.
        """
        attached, made = [], []
        for index, disk in enumerate(instance.get("disks") or []):
            params = disk.get("initializeParams")
            if params is None:
                attached.append(disk)
                continue
            image = self._find_image(params.get("sourceImage") or "")
            disk_name = params.get("diskName") or (instance["name"] if index == 0
                                                   else f"{instance['name']}-{index}")
            if (project, zone, disk_name) in self._disks or disk_name in [d["name"] for d in made]:
                raise GCEError("alreadyExists",
                               target=f"projects/{project}/zones/{zone}/disks/{disk_name}")
            size = str(params.get("diskSizeGb") or image["diskSizeGb"])
            if int(size) < int(image["diskSizeGb"]):
                raise GCEError("invalid", f"Invalid value for field 'resource.disks[{index}]."
                               f"initializeParams.diskSizeGb': '{size}'. Requested disk size"
                               f" cannot be smaller than the image size ({image['diskSizeGb']} GB)")
            kind = _last(params.get("diskType")) or "pd-standard"
            made.append({"kind": "compute#disk", "id": str(next(_IDS)), "name": disk_name,
                         "creationTimestamp": _now(), "sizeGb": size, "status": "READY",
                         "zone": self._zone_link(project, zone),
                         "type": f"{self._zone_link(project, zone)}/diskTypes/{kind}",
                         "sourceImage": image["selfLink"], "labels": dict(params.get("labels") or {}),
                         "selfLink": self._link(project, zone, "disks", disk_name),
                         "users": [instance["selfLink"]]})
            attached.append({"kind": "compute#attachedDisk", "type": "PERSISTENT",
                             "mode": disk.get("mode", "READ_WRITE"), "index": index,
                             "boot": bool(disk.get("boot", index == 0)),
                             "autoDelete": bool(disk.get("autoDelete", False)),
                             "deviceName": disk.get("deviceName") or disk_name,
                             "interface": "SCSI", "diskSizeGb": size,
                             "source": made[-1]["selfLink"]})
        for disk in made:
            self._disks[(project, zone, disk["name"])] = disk
        instance["disks"] = attached

    def _find_image(self, link: str) -> dict[str, Any]:
        """The image a ``sourceImage`` names (by name or family), or 404 (hold the lock)."""
        path = link[link.find("projects/"):] if "projects/" in link else link
        match = re.fullmatch(r"projects/([^/]+)/global/images/(?:family/([^/]+)|([^/]+))", path)
        if match is None:
            raise GCEError("invalid", f"Invalid value for field 'sourceImage': '{link}'.")
        project, family, name = match.groups()
        if family is not None:
            found = [i for (p, _), i in self._images.items() if p == project
                     and i.get("family") == family and i["status"] == "READY"]
            if not found:
                raise GCEError("notFound", target=f"projects/{project}/global/images/family/"
                                                  f"{family}")
            return max(found, key=lambda i: (i["creationTimestamp"], int(i["id"])))
        image = self._images.get((project, name))
        if image is None:
            raise GCEError("notFound", target=f"projects/{project}/global/images/{name}")
        return image

    def _drop_disks(self, instance: dict[str, Any]) -> None:
        """Delete ``instance``'s auto-delete disks and detach the rest (hold the lock)."""
        for attached in instance.get("disks") or []:
            for key, disk in list(self._disks.items()):
                if disk["selfLink"] != attached.get("source"):
                    continue
                if attached.get("autoDelete"):
                    del self._disks[key]
                else:
                    disk["users"] = [u for u in disk.get("users", []) if u != instance["selfLink"]]

    def _instances_get(self, project, zone, name, *_):
        with self._lock:
            return json.loads(json.dumps(self._instance(project, zone, name)))

    def _instances_list(self, project, zone, _name, _match, params, *_):
        return self._zonal_list(self._instances, "instance", project, zone, params)

    def _zonal_list(self, store: dict[tuple[str, str, str], dict[str, Any]], kind: str,
                    project: str, zone: str, params: dict[str, str]) -> dict[str, Any]:
        """A zonal ``list`` answer: the ``filter``-matching resources of ``store`` in ``zone``."""
        clauses = _parse_filter(params.get("filter", ""))
        with self._lock:
            items = [json.loads(json.dumps(r)) for (p, z, _), r in sorted(store.items())
                     if p == project and z == zone and _matches(r, clauses)]
        plural = "operations" if kind == "operation" else f"{kind}s"
        answer = {"kind": f"compute#{kind}List", "id": f"projects/{project}/zones/{zone}/{plural}",
                  "selfLink": self._link(project, zone, plural)}
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

    def _zoneOperations_list(self, project, zone, _name, _match, params, *_):
        # Operations are keyed (project, scope, name) too, a zone's scope being the zone.
        return self._zonal_list(self._operations, "operation", project, zone, params)

    # -- images and disks -----------------------------------------------------------------

    def _images_get(self, project, _zone, name, *_):
        with self._lock:
            return dict(self._find_image(f"projects/{project}/global/images/{name}"))

    def _images_getFromFamily(self, project, _zone, _name, match, *_):
        with self._lock:
            return dict(self._find_image(f"projects/{project}/global/images/family/"
                                         f"{match['family']}"))

    def _disks_get(self, project, zone, name, *_):
        with self._lock:
            disk = self._disks.get((project, zone, name))
            if disk is None:
                raise GCEError("notFound", target=f"projects/{project}/zones/{zone}/disks/{name}")
            return json.loads(json.dumps(disk))

    def _disks_list(self, project, zone, _name, _match, params, *_):
        return self._zonal_list(self._disks, "disk", project, zone, params)

    def _disks_delete(self, project, zone, name, _match, _params, _body, op_fault):
        with self._lock:
            disk = self._disks.get((project, zone, name))
            if disk is None:
                raise GCEError("notFound", target=f"projects/{project}/zones/{zone}/disks/{name}")
            if disk.get("users"):
                raise GCEError("resourceInUseByAnotherResource",
                               f"The disk resource 'projects/{project}/zones/{zone}/disks/{name}'"
                               f" is already being used by '{_last(disk['users'][0])}'", status=400)
            op = self._new_operation(project, zone, "delete", disk)
            if op_fault is None:
                del self._disks[(project, zone, name)]
            self._finish(op, op_fault)
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
            error: dict[str, Any] = {"code": failure.code, "message": failure.message}
            if failure.details:
                error["errorDetails"] = failure.details
            op["error"] = {"errors": [error]}
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
                    self._drop_disks(instance)
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
                        self._drop_disks(instance)
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
                self._drop_disks(instance)
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
    def _catalog_images(catalog_dir: Path | None) -> list[str]:
        """The image paths the catalog's ``gcp/images.csv`` names."""
        path = Path(catalog_dir or "") / "gcp" / "images.csv"
        if catalog_dir is None or not path.is_file():
            return []
        with path.open(newline="") as handle:
            return [row["ImageId"] for row in csv.DictReader(handle) if row.get("ImageId")]

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

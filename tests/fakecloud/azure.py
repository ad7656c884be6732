"""A fake Azure Resource Manager for tests: resource groups, a few network resources and VMs.

:class:`FakeARM` is a WSGI app of our own on a threaded werkzeug server on
``127.0.0.1:<free port>``, served over TLS with a self-signed certificate made
at start (azure-core refuses bearer tokens over plain http, and azure-identity
accepts only an https authority). Code under test reaches it through standard
configuration only: :meth:`FakeARM.env` gives the CA bundle
(``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``), the service principal
(``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``), the
authority (``AZURE_AUTHORITY_HOST``, the fake's own token endpoint), the
subscription and the ARM base URL (``AZURE_RESOURCE_MANAGER_ENDPOINT``, to be
passed as the clients' ``base_url``). msal validates an authority it does not
know against login.microsoftonline.com, so a credential aimed at the fake
needs ``disable_instance_discovery=True`` (as for Azure Stack).

What it serves, paths case-insensitive as in ARM, ``api-version`` required
and otherwise ignored:

- the token endpoint (OpenID configuration and ``oauth2/v2.0/token``, client
  credentials only); ARM requests need one of its bearer tokens (401
  ``InvalidAuthenticationToken`` otherwise);
- resource groups: PUT (tags), GET, HEAD, list (``$filter`` by ``tagName``
  and ``tagValue``), DELETE (202 and an ``Azure-AsyncOperation``; everything
  inside goes);
- Microsoft.Network networkSecurityGroups (securityRules), virtualNetworks
  (subnets, also as child resources), publicIPAddresses, networkInterfaces:
  PUT/GET/list/DELETE, provisioned at once;
- Microsoft.Compute virtualMachines: PUT (201 and an ``Azure-AsyncOperation``
  that is InProgress at least once, then Succeeded or Failed with
  ``error.code``; a failed create leaves the VM in provisioningState Failed, as
  Azure does), GET (``$expand=instanceView``), ``/instanceView``, DELETE, POST
  ``deallocate``, ``start``, ``powerOff``; ``imageReference`` must have an
  ``id`` or ``publisher``, ``offer`` and ``sku``;
- Microsoft.Compute disks: each VM's OS disk, made with it from
  ``storageProfile.osDisk`` (name, ``diskSizeGB``, ``managedDisk.storageAccountType``;
  the name and the disk's id written back into the VM as Azure does); GET,
  list, DELETE (``OperationNotAllowed`` while its VM exists). Deleting the VM
  deletes it with ``deleteOption: Delete``, else (``Detach``, the default)
  leaves it ``Unattached``; a spot eviction with policy Delete deletes it;
- a NIC still attached to a VM cannot be deleted (``NicInUse``), nor a public
  IP still on a NIC (``PublicIPAddressCannotBeDeleted``);
- a twin's own shutdown (the guest powers off): the VM is ``stopped``, still
  allocated, as in Azure (:meth:`FakeARM.twin_shut_down`, attached as the twin
  host's ``on_shutdown`` unless the host has one);
- faults by rule (:meth:`FakeARM.fail`): capacity codes end the request's
  async operation Failed, every other code answers the request itself with
  ARM's error body and status;
- node twins (optional ``twins=TwinHost``): each VM is a twin booted with a
  ``#cloud-config`` user made from ``adminUsername`` and the SSH public keys
  (passwordless sudo, as Azure's agent grants); its NIC's private address and
  its public IP resource's address are the twin's; deallocate, powerOff,
  start, delete and :meth:`FakeARM.evict` act on it;
- a record of every request (:attr:`FakeARM.calls`).

Async answers carry ``Retry-After: <poll_after>`` only when ``poll_after`` is
given (whole seconds: the SDKs parse it as an int); without it azure-core's
pollers wait the client's ``polling_interval`` (30 s unless the client is
built with a smaller one, as the tests do).
"""

from __future__ import annotations

import base64
import datetime
import http
import ipaddress
import itertools
import json
import logging
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .faults import RequestFacts, Rule
from .serving import LoopbackServer

if TYPE_CHECKING:
    from .twins import Twin, TwinHost

__all__ = ["ARMCall", "FakeARM", "arm_status_for"]

log = logging.getLogger(__name__)

#: Codes that Azure reports as the failed outcome of a VM's long-running operation.
ASYNC_CODES = frozenset({
    "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest", "SpotAllocationFailed", "InternalExecutionError",
})
# HTTP statuses ARM answers the codes a test is likely to inject with (others: 400).
_STATUS = {
    "InvalidAuthenticationToken": 401,
    "AuthenticationFailed": 401,
    "ExpiredAuthenticationToken": 401,
    "AuthorizationFailed": 403,
    "LinkedAuthorizationFailed": 403,
    "SkuNotAvailable": 409,
    "QuotaExceeded": 409,
    "OperationNotAllowed": 409,
    "Conflict": 409,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
}
_MESSAGES = {
    "AllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested"
                        " VM size in this region.",
    "ZonalAllocationFailed": "Allocation failed. We do not have sufficient capacity for the"
                             " requested VM size in this zone.",
    "SkuNotAvailable": "The requested VM size is currently not available in this location.",
    "QuotaExceeded": "Operation could not be completed as it results in exceeding approved"
                     " quota.",
    "OperationNotAllowed": "Operation could not be completed as it results in exceeding"
                           " approved cores quota.",
    "AuthorizationFailed": "The client does not have authorization to perform this action.",
    "TooManyRequests": "The request is being throttled.",
}
# (namespace, type) in lower case -> the type's canonical spelling.
_TYPES = {
    ("microsoft.network", "networksecuritygroups"): "Microsoft.Network/networkSecurityGroups",
    ("microsoft.network", "virtualnetworks"): "Microsoft.Network/virtualNetworks",
    ("microsoft.network", "publicipaddresses"): "Microsoft.Network/publicIPAddresses",
    ("microsoft.network", "networkinterfaces"): "Microsoft.Network/networkInterfaces",
    ("microsoft.compute", "virtualmachines"): "Microsoft.Compute/virtualMachines",
    ("microsoft.compute", "disks"): "Microsoft.Compute/disks",
}
# Short names used in calls' and rules' actions.
_KINDS = {
    "Microsoft.Network/networkSecurityGroups": "nsg",
    "Microsoft.Network/virtualNetworks": "vnet",
    "Microsoft.Network/publicIPAddresses": "publicip",
    "Microsoft.Network/networkInterfaces": "nic",
    "Microsoft.Compute/virtualMachines": "vm",
    "Microsoft.Compute/disks": "disk",
}
_VERBS = {"PUT": "create", "GET": "get", "HEAD": "get", "DELETE": "delete", "PATCH": "update"}
_POWER_TEXT = {"running": "VM running", "deallocated": "VM deallocated",
               "stopped": "VM stopped", "starting": "VM starting",
               "deallocating": "VM deallocating", "stopping": "VM stopping"}
_BEDS = itertools.count(1)
_PUBLIC_POOL = ipaddress.ip_network("20.0.0.0/8")  # without twins: made-up public addresses


def arm_status_for(code: str) -> int:
    """The HTTP status ARM answers error ``code`` with (400 for codes not listed)."""
    return _STATUS.get(code, 400)


@dataclass(frozen=True)
class ARMCall:
    """One request the fake answered."""

    time: float
    method: str
    #: The path as sent (no query).
    path: str
    #: e.g. ``group_create``, ``vm_get``, ``vm_deallocate``, ``operation_get``, ``token``.
    action: str
    status: int
    #: ARM error code of the answer, None on success.
    error: str | None
    #: Whether an injected rule answered it.
    fault: bool = False
    duration: float = 0.0


class ARMError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class _Answer:
    status: int
    body: Any = None  # JSON-able, or None for no body
    headers: tuple[tuple[str, str], ...] = ()
    fault: bool = False


class _Operation:
    """A long-running operation: InProgress until its work is done and it was polled once."""

    def __init__(self, op_id: str, future: Any):
        self.id = op_id
        self.future = future
        self.polls = 0
        self.started = _now()
        #: when its work began and ended (``time.time()``), for :meth:`FakeARM.busy_spans`
        self.span = (time.time(), None)
        future.add_done_callback(lambda _: setattr(self, "span", (self.span[0], time.time())))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1 and localhost, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skyk fake ARM")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "ca.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class FakeARM:
    """A fake ARM endpoint and token authority on ``https://127.0.0.1:<free port>``.

    ``twins``: a ``TwinHost`` whose sandboxes back the VMs (None: addresses
    are made up). ``poll_after``: the ``Retry-After`` of async answers, in
    whole seconds (None: no such header). Use it as a context manager, or :meth:`start` and :meth:`close`;
    the twin host stays the caller's.
    """

    def __init__(self, *, twins: TwinHost | None = None, poll_after: int | None = None):
        bed = next(_BEDS)
        self.twins = twins
        self.poll_after = poll_after
        self.subscription_id = str(uuid.UUID(int=0x5C1C_0000_0000_0000_0000_0000_0000_0000 + bed))
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.client_secret = secrets.token_urlsafe(24)
        #: ``https://127.0.0.1:PORT`` once started: ARM base URL and authority host alike.
        self.endpoint = ""
        #: The CA bundle that makes the endpoint trusted (a file) once started.
        self.ca_file: Path | None = None
        #: Failures in background work, as messages; tests may assert it is empty.
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._rules: list[tuple[Rule, str | None]] = []
        self._calls: list[ARMCall] = []
        self._resources: dict[str, dict[str, Any]] = {}  # lower-case id -> resource JSON
        self._ops: dict[str, _Operation] = {}
        self._twins_by_vm: dict[str, Twin] = {}  # lower-case VM id -> twin
        self._tokens: set[str] = set()
        self._next_public = itertools.count(1)
        self._next_private: dict[str, itertools.count] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._server: LoopbackServer | None = None
        self._dir: Path | None = None

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> FakeARM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeARM:
        """Make the certificate, start serving on a free loopback port; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeARM already started")
        if self.twins is not None and self.twins.on_shutdown is None:
            self.twins.on_shutdown = self.twin_shut_down
        self._dir = Path(tempfile.mkdtemp(prefix="fakearm-"))
        self.ca_file, key_file = _make_certificate(self._dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fakearm-op")
        self._server = LoopbackServer(self._wsgi, "fakearm", ssl_context=context)
        self.endpoint = self._server.endpoint
        return self

    def close(self) -> None:
        """Stop serving and wait for background work (the twin host is the caller's)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- what tests and subprocesses use -----------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment that points azure-identity and azure-mgmt-* code at this fake."""
        if self.ca_file is None:
            raise RuntimeError("start the FakeARM first")
        return {
            "AZURE_SUBSCRIPTION_ID": self.subscription_id,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_AUTHORITY_HOST": self.endpoint,
            "AZURE_RESOURCE_MANAGER_ENDPOINT": self.endpoint,
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "SSL_CERT_FILE": str(self.ca_file),
        }

    def credential(self, **kwargs: Any) -> Any:
        """An azure-identity ClientSecretCredential for this fake (in-process tests)."""
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            self.tenant_id, self.client_id, self.client_secret, authority=self.endpoint,
            disable_instance_discovery=True, connection_verify=str(self.ca_file), **kwargs)

    def fail(self, code: str, *, action: str | None = "vm_create", location: str | None = None,
             zone: str | None = None, vm_size: str | None = None, spot: bool | None = None,
             times: int | None = 1, message: str | None = None,
             status: int | None = None) -> Rule:
        """Make matching requests fail with ARM error ``code``; returns the rule.

        ``action`` is a call's action (``vm_create``, ``vm_start``,
        ``group_create``, ``nic_get``, ...; None: any). ``location``, ``zone``
        (the VM's first zone), ``vm_size`` and ``spot`` (priority Spot) match
        VM requests that say them. A code in :data:`ASYNC_CODES` on
        ``vm_create`` or ``vm_start`` is accepted and its async operation ends
        Failed with it; any other code answers the request with ARM's status
        for it (``status`` overrides it; 429 comes with ``Retry-After: 0``).
        """
        rule = Rule(code, action=action, region=location, zone=zone, instance_type=vm_size,
                    spot=spot, times=times, message=message,
                    status=status if status is not None else arm_status_for(code))
        with self._lock:
            self._rules.append((rule, message))
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def calls(self) -> list[ARMCall]:
        """Every request answered so far, in order (a copy)."""
        with self._lock:
            return list(self._calls)

    def resources(self) -> list[dict[str, Any]]:
        """Every resource group and resource (copies)."""
        with self._lock:
            return json.loads(json.dumps(list(self._resources.values())))

    def busy_spans(self) -> list[tuple[float, float]]:
        """When the fake worked (``time.time()`` pairs): each request it answered and each
        long-running operation's work, a VM's boot included (see :mod:`fakecloud.timing`)."""
        with self._lock:
            spans = [(c.time, c.time + c.duration) for c in self._calls]
            ops = [op.span for op in self._ops.values()]
        return spans + [(start, end) for start, end in ops if end is not None]

    def twin(self, vm_id: str) -> Twin | None:
        """The twin behind the VM with ARM id ``vm_id``."""
        with self._lock:
            return self._twins_by_vm.get(vm_id.lower())

    def twin_shut_down(self, twin: Twin) -> None:
        """The twin host's ``on_shutdown``: the guest powered itself off.

        As in Azure, the VM is then ``stopped``: off, but still allocated (and
        billed), with its addresses; only ARM can deallocate it.
        """
        with self._lock:
            key = next((k for k, t in self._twins_by_vm.items() if t is twin), None)
        twin.stop()
        with self._lock:
            vm = self._resources.get(key or "")
            if vm is not None and vm["_power"] in ("running", "starting", "stopping"):
                vm["_power"] = "stopped"

    def evict(self, vm_id: str) -> None:
        """Azure evicts Spot VM ``vm_id``: deallocated or deleted per its evictionPolicy.

        Its twin is stopped or terminated. KeyError for an unknown VM,
        ValueError for one that is not Spot.
        """
        key = vm_id.lower()
        with self._lock:
            vm = self._resources[key]
            props = vm["properties"]
            if props.get("priority") != "Spot":
                raise ValueError(f"{vm_id} is not a Spot VM; Azure evicts only Spot")
            delete = props.get("evictionPolicy") == "Delete"
            twin = self._twins_by_vm.get(key)
        if twin is not None:
            (twin.terminate if delete else twin.stop)()
        with self._lock:
            if delete:  # the VM and its disks (Azure's Delete eviction policy)
                self._remove_vm(key, delete_disks=True)
            else:
                vm["_power"] = "deallocated"
                self._sync_addresses(key)

    # -- the WSGI layer --------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started, clock = time.time(), time.perf_counter()
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length else b""
        query = {k.lower(): v for k, v in parse_qsl(environ.get("QUERY_STRING", ""))}
        action = "unknown"
        try:
            action, answer = self._route(environ, method, path, query, raw)
        except ARMError as exc:
            answer = _Answer(exc.status, _error_body(exc.code, exc.message))
        except Exception as exc:  # a bug here must reach the test as an answer, not a hang
            log.exception("fake ARM failed on %s %s", method, path)
            self.errors.append(f"{method} {path}: {exc!r}")
            answer = _Answer(500, _error_body("InternalServerError", f"fake ARM: {exc!r}"))
        body = b"" if answer.body is None or method == "HEAD" else json.dumps(answer.body).encode()
        headers = list(answer.headers)
        if answer.body is not None:
            headers.append(("Content-Type", "application/json; charset=utf-8"))
        headers += [("Content-Length", str(len(body))),
                    ("x-ms-request-id", str(uuid.uuid4()))]
        error = None
        if answer.status >= 400 and isinstance(answer.body, dict):
            found = answer.body.get("error")  # ARM: {"code", "message"}; OAuth: a string
            error = found.get("code") if isinstance(found, dict) else found
        with self._lock:
            self._calls.append(ARMCall(started, method, path, action, answer.status, error,
                                       answer.fault, time.perf_counter() - clock))
        phrase = http.HTTPStatus(answer.status).phrase
        start_response(f"{answer.status} {phrase}", headers)
        return [body]

    def _route(self, environ: dict[str, Any], method: str, path: str, query: dict[str, str],
               raw: bytes) -> tuple[str, _Answer]:
        parts = [p for p in path.split("/") if p]
        low = [p.lower() for p in parts]
        # -- the token authority
        if low[1:] == ["v2.0", ".well-known", "openid-configuration"] and method == "GET":
            return "openid_configuration", _Answer(200, self._openid(parts[0]))
        if low[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
            return "token", self._token(parts[0], raw)
        if low == ["common", "discovery", "instance"]:
            return "instance_discovery", _Answer(200, {
                "tenant_discovery_endpoint":
                    f"{self.endpoint}/{self.tenant_id}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1", "metadata": []})
        # -- ARM
        action = self._action(method, low)
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self._tokens:
            raise ARMError(401, "InvalidAuthenticationToken",
                           "The access token is invalid or missing.")
        fault = self._sync_fault(action, low, raw)
        if fault is not None:
            return action, fault
        if "api-version" not in query:
            raise ARMError(400, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for"
                           " all requests.")
        if len(low) < 2 or low[0] != "subscriptions":
            raise ARMError(404, "InvalidResourceType", f"The fake ARM does not serve {path}.")
        if low[1] != self.subscription_id:
            raise ARMError(404, "SubscriptionNotFound",
                           f"The subscription '{parts[1]}' could not be found.")
        body = json.loads(raw) if raw.strip() else {}
        with self._lock:
            return action, self._arm(method, parts, low, query, body, action)

    def _action(self, method: str, low: list[str]) -> str:
        if len(low) == 8 and low[2] == "providers" and low[6] == "operations":
            return "operation_get"
        if len(low) in (3, 4) and low[2:3] == ["resourcegroups"]:
            return "group_list" if len(low) == 3 else f"group_{_VERBS.get(method, method.lower())}"
        if len(low) >= 7 and low[4] == "providers":
            kind = _KINDS.get(_TYPES.get((low[5], low[6]), ""), low[6])
            if len(low) == 7:
                return f"{kind}_list"
            rest = low[8:]
            if kind == "vm" and rest and method == "POST":
                return f"vm_{rest[0]}"
            if kind == "vm" and rest == ["instanceview"]:
                return "vm_instanceview"
            if kind == "vnet" and rest[:1] == ["subnets"]:
                return "subnet_list" if len(rest) == 1 else \
                    f"subnet_{_VERBS.get(method, method.lower())}"
            return f"{kind}_{_VERBS.get(method, method.lower())}"
        return f"{method.lower()}"

    def _facts(self, action: str, low: list[str], raw: bytes) -> RequestFacts:
        location = vm_size = zone = None
        spot = False
        if action.startswith("vm_"):
            body: dict[str, Any] = {}
            if action == "vm_create" and raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
            elif len(low) >= 8:
                with self._lock:
                    body = self._resources.get("/" + "/".join(low[:8]), {})
            props = body.get("properties") or {}
            location = body.get("location")
            vm_size = (props.get("hardwareProfile") or {}).get("vmSize")
            zone = (body.get("zones") or [None])[0]
            spot = props.get("priority") == "Spot"
        return RequestFacts(action, location, zone, vm_size, spot)

    def _take_rule(self, action: str, low: list[str], raw: bytes,
                   want_async: bool) -> Rule | None:
        with self._lock:
            rules = list(self._rules)
        if not rules:
            return None
        facts = self._facts(action, low, raw)
        for rule, _ in rules:
            if (rule.code in ASYNC_CODES and action in ("vm_create", "vm_start")) != want_async:
                continue
            if rule.take(facts):
                return rule
        return None

    def _sync_fault(self, action: str, low: list[str], raw: bytes) -> _Answer | None:
        rule = self._take_rule(action, low, raw, want_async=False)
        if rule is None:
            return None
        headers = (("Retry-After", "0"),) if rule.status == 429 else ()
        message = rule.message or _MESSAGES.get(rule.code, f"{rule.code}.")
        return _Answer(rule.status, _error_body(rule.code, message), headers, fault=True)

    # -- token authority -------------------------------------------------------------------

    def _openid(self, tenant: str) -> dict[str, Any]:
        base = f"{self.endpoint}/{tenant}"
        return {"token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "response_types_supported": ["code", "token"],
                "grant_types_supported": ["client_credentials"]}

    def _token(self, tenant: str, raw: bytes) -> _Answer:
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        if tenant != self.tenant_id:
            return _Answer(400, {"error": "invalid_request",
                                 "error_description": f"AADSTS90002: Tenant '{tenant}' not found."})
        if (form.get("grant_type") != "client_credentials"
                or form.get("client_id") != self.client_id
                or form.get("client_secret") != self.client_secret):
            return _Answer(401, {"error": "invalid_client",
                                 "error_description": "AADSTS7000215: Invalid client secret"
                                                      " provided."})
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(token)
        return _Answer(200, {"token_type": "Bearer", "expires_in": 3599,
                             "ext_expires_in": 3599, "access_token": token})

    # -- ARM resources ---------------------------------------------------------------------

    def _arm(self, method: str, parts: list[str], low: list[str], query: dict[str, str],
             body: dict[str, Any], action: str) -> _Answer:
        if action == "operation_get":
            return self._operation(low[7])
        if action == "group_list":
            groups = [r for k, r in self._resources.items() if k.count("/") == 4]
            if query.get("$filter"):
                groups = [g for g in groups if _tag_filter(query["$filter"])(g)]
            return _Answer(200, {"value": [self._public(g) for g in groups]})
        group_key = "/" + "/".join(low[:4])
        group_id = "/" + "/".join(parts[:4])
        if len(low) == 4:
            return self._group(method, parts[3], group_key, group_id, body)
        group = self._resources.get(group_key)
        if group is None:
            raise ARMError(404, "ResourceGroupNotFound",
                           f"Resource group '{parts[3]}' could not be found.")
        rtype = _TYPES.get((low[5], low[6]))
        if rtype is None:
            raise ARMError(404, "InvalidResourceType",
                           f"The fake ARM does not serve resource type '{parts[5]}/{parts[6]}'.")
        if len(low) == 7:
            if method != "GET":
                raise ARMError(405, "MethodNotAllowed", "Only GET lists resources.")
            prefix = group_key + "/providers/" + rtype.lower() + "/"
            found = [r for k, r in self._resources.items()
                     if k.startswith(prefix) and k.count("/") == 8]
            return _Answer(200, {"value": [self._public(r) for r in found]})
        key = "/" + "/".join(low[:8])
        rid = "/" + "/".join(parts[:8])
        rest = low[8:]
        if rtype == "Microsoft.Network/virtualNetworks" and rest[:1] == ["subnets"]:
            return self._subnet(method, key, parts, body)
        if rtype == "Microsoft.Compute/virtualMachines" and rest:
            return self._vm_sub(method, key, rest, query, parts)
        if rest:
            raise ARMError(404, "InvalidResourceType", f"The fake ARM does not serve {rest}.")
        if method == "GET":
            resource = self._get(key, rtype, parts)
            if rtype == "Microsoft.Compute/virtualMachines" and \
                    query.get("$expand", "").lower() == "instanceview":
                out = self._public(resource)
                out["properties"]["instanceView"] = self._instance_view(resource)
                return _Answer(200, out)
            return _Answer(200, self._public(resource))
        if method == "DELETE":
            if key not in self._resources:
                return _Answer(204)
            if rtype == "Microsoft.Compute/virtualMachines":
                return self._vm_delete(key, parts)
            if rtype == "Microsoft.Compute/disks":
                return self._disk_delete(key)
            self._delete_network(key, rtype)
            return _Answer(200)
        if method == "PUT":
            location = body.get("location")
            if not location:
                raise ARMError(400, "LocationRequired", "The location property is required for"
                                                        " this definition.")
            if rtype == "Microsoft.Compute/virtualMachines":
                return self._vm_put(key, rid, parts, body)
            existed = key in self._resources
            resource = {"id": rid, "name": parts[7], "type": rtype, "location": location,
                        "tags": body.get("tags") or {}, "etag": f'W/"{uuid.uuid4()}"',
                        "properties": dict(body.get("properties") or {})}
            if "zones" in body:
                resource["zones"] = body["zones"]
            if "sku" in body:
                resource["sku"] = body["sku"]
            self._provision_network(resource, rtype, key, rid)
            self._resources[key] = resource
            return _Answer(200 if existed else 201, self._public(resource))
        raise ARMError(405, "MethodNotAllowed", f"{method} is not served here.")

    def _group(self, method: str, name: str, key: str, rid: str,
               body: dict[str, Any]) -> _Answer:
        group = self._resources.get(key)
        if method in ("GET", "HEAD"):
            if group is None:
                if method == "HEAD":
                    return _Answer(404)
                raise ARMError(404, "ResourceGroupNotFound",
                               f"Resource group '{name}' could not be found.")
            return _Answer(204 if method == "HEAD" else 200,
                           None if method == "HEAD" else self._public(group))
        if method in ("PUT", "PATCH"):
            if method == "PATCH":
                if group is None:
                    raise ARMError(404, "ResourceGroupNotFound",
                                   f"Resource group '{name}' could not be found.")
                if "tags" in body:
                    group["tags"] = body["tags"] or {}
                return _Answer(200, self._public(group))
            location = body.get("location")
            if not location:
                raise ARMError(400, "LocationRequired", "The location property is required.")
            if group is not None and group["location"].lower() != location.lower():
                raise ARMError(409, "InvalidResourceGroupLocation",
                               f"Invalid resource group location '{location}'. The Resource"
                               f" group already exists in location '{group['location']}'.")
            existed = group is not None
            self._resources[key] = {
                "id": rid if group is None else group["id"], "name": name,
                "type": "Microsoft.Resources/resourceGroups", "location": location,
                "tags": body.get("tags") or {}, "properties": {"provisioningState": "Succeeded"}}
            return _Answer(200 if existed else 201, self._public(self._resources[key]))
        if method == "DELETE":
            if group is None:
                raise ARMError(404, "ResourceGroupNotFound",
                               f"Resource group '{name}' could not be found.")
            inside = [k for k in self._resources if k.startswith(key + "/")]
            twins = [self._twins_by_vm.pop(k) for k in inside if k in self._twins_by_vm]
            for k in [key, *inside]:
                self._resources.pop(k, None)
            return self._async(group["location"], "Microsoft.Resources",
                               lambda: [t.terminate() for t in twins], status=202)
        raise ARMError(405, "MethodNotAllowed", f"{method} is not served on resource groups.")

    def _get(self, key: str, rtype: str, parts: list[str]) -> dict[str, Any]:
        resource = self._resources.get(key)
        if resource is None:
            raise ARMError(404, "ResourceNotFound",
                           f"The Resource '{rtype}/{parts[7]}' under resource group"
                           f" '{parts[3]}' was not found.")
        return resource

    @staticmethod
    def _public(resource: dict[str, Any]) -> dict[str, Any]:
        """A resource's JSON without the fake's private fields (those starting with _)."""
        out = json.loads(json.dumps({k: v for k, v in resource.items()
                                     if not k.startswith("_")}))
        return out

    # -- network ---------------------------------------------------------------------------

    def _provision_network(self, resource: dict[str, Any], rtype: str, key: str,
                           rid: str) -> None:
        props = resource["properties"]
        props["provisioningState"] = "Succeeded"
        props.setdefault("resourceGuid", str(uuid.uuid4()))
        if rtype == "Microsoft.Network/networkSecurityGroups":
            for rule in props.get("securityRules") or []:
                rule["id"] = f"{rid}/securityRules/{rule.get('name')}"
                rule.setdefault("properties", {})["provisioningState"] = "Succeeded"
        elif rtype == "Microsoft.Network/virtualNetworks":
            for subnet in props.get("subnets") or []:
                self._provision_subnet(subnet, rid)
        elif rtype == "Microsoft.Network/publicIPAddresses":
            props.setdefault("publicIPAllocationMethod", "Dynamic")
            props.setdefault("publicIPAddressVersion", "IPv4")
            old = self._resources.get(key)
            if old is not None:
                for field in ("ipAddress", "ipConfiguration"):
                    if field in old["properties"]:
                        props[field] = old["properties"][field]
            elif props["publicIPAllocationMethod"] == "Static" and self.twins is None:
                props["ipAddress"] = self._made_up_public()
        elif rtype == "Microsoft.Network/networkInterfaces":
            configs = props.get("ipConfigurations") or []
            if not configs:
                raise ARMError(400, "InvalidRequestFormat",
                               "A network interface needs at least one IP configuration.")
            old = self._resources.get(key)
            if old is not None and "virtualMachine" in old["properties"]:
                props["virtualMachine"] = old["properties"]["virtualMachine"]
            for i, config in enumerate(configs):
                config["id"] = f"{rid}/ipConfigurations/{config.get('name')}"
                cprops = config.setdefault("properties", {})
                cprops["provisioningState"] = "Succeeded"
                cprops.setdefault("primary", i == 0)
                cprops.setdefault("privateIPAllocationMethod", "Dynamic")
                subnet_id = (cprops.get("subnet") or {}).get("id", "")
                if self._find_subnet(subnet_id) is None:
                    raise ARMError(400, "InvalidResourceReference",
                                   f"Resource {subnet_id} referenced by resource {rid} was not"
                                   " found.")
                if not cprops.get("privateIPAddress"):
                    cprops["privateIPAddress"] = self._made_up_private(subnet_id)
                pip_id = (cprops.get("publicIPAddress") or {}).get("id")
                if pip_id:
                    pip = self._resources.get(pip_id.lower())
                    if pip is None:
                        raise ARMError(400, "InvalidResourceReference",
                                       f"Resource {pip_id} referenced by resource {rid} was"
                                       " not found.")
                    pip["properties"]["ipConfiguration"] = {"id": config["id"]}

    @staticmethod
    def _provision_subnet(subnet: dict[str, Any], vnet_id: str) -> None:
        subnet["id"] = f"{vnet_id}/subnets/{subnet.get('name')}"
        subnet.setdefault("properties", {})["provisioningState"] = "Succeeded"

    def _find_subnet(self, subnet_id: str) -> dict[str, Any] | None:
        low = subnet_id.lower()
        vnet = self._resources.get(low.rsplit("/subnets/", 1)[0])
        if vnet is None or "/subnets/" not in low:
            return None
        for subnet in vnet["properties"].get("subnets") or []:
            if subnet["id"].lower() == low:
                return subnet
        return None

    def _subnet(self, method: str, vnet_key: str, parts: list[str],
                body: dict[str, Any]) -> _Answer:
        vnet = self._resources.get(vnet_key)
        if vnet is None:
            raise ARMError(404, "ResourceNotFound",
                           f"The Resource 'Microsoft.Network/virtualNetworks/{parts[7]}' under"
                           f" resource group '{parts[3]}' was not found.")
        subnets = vnet["properties"].setdefault("subnets", [])
        if len(parts) == 9:
            if method != "GET":
                raise ARMError(405, "MethodNotAllowed", "Only GET lists subnets.")
            return _Answer(200, {"value": json.loads(json.dumps(subnets))})
        name = parts[9]
        found = next((s for s in subnets if s.get("name", "").lower() == name.lower()), None)
        if method == "GET":
            if found is None:
                raise ARMError(404, "NotFound", f"Resource {'/'.join(parts)} not found.")
            return _Answer(200, json.loads(json.dumps(found)))
        if method == "PUT":
            subnet = {"name": name, "properties": dict(body.get("properties") or {})}
            self._provision_subnet(subnet, vnet["id"])
            if found is not None:
                subnets[subnets.index(found)] = subnet
            else:
                subnets.append(subnet)
            return _Answer(200 if found else 201, json.loads(json.dumps(subnet)))
        if method == "DELETE":
            if found is None:
                return _Answer(204)
            subnets.remove(found)
            return _Answer(200)
        raise ARMError(405, "MethodNotAllowed", f"{method} is not served on subnets.")

    def _delete_network(self, key: str, rtype: str) -> None:
        resource = self._resources[key]
        props = resource["properties"]
        if rtype == "Microsoft.Network/networkInterfaces" and props.get("virtualMachine"):
            raise ARMError(400, "NicInUse",
                           f"Network Interface {resource['id']} is used by existing resource"
                           f" {props['virtualMachine']['id']}.")
        if rtype == "Microsoft.Network/publicIPAddresses" and props.get("ipConfiguration") \
                and props["ipConfiguration"]["id"].lower().split("/ipconfigurations/")[0] \
                in self._resources:
            raise ARMError(400, "PublicIPAddressCannotBeDeleted",
                           f"Public IP address {resource['id']} can not be deleted since it is"
                           f" still allocated to resource {props['ipConfiguration']['id']}.")
        if rtype == "Microsoft.Network/networkInterfaces":
            for config in props.get("ipConfigurations") or []:
                pip_id = ((config.get("properties") or {}).get("publicIPAddress") or {}).get("id")
                pip = self._resources.get((pip_id or "").lower())
                if pip is not None:
                    pip["properties"].pop("ipConfiguration", None)
        del self._resources[key]

    def _made_up_private(self, subnet_id: str) -> str:
        subnet = self._find_subnet(subnet_id) or {}
        prefix = (subnet.get("properties") or {}).get("addressPrefix") or "10.0.0.0/24"
        net = ipaddress.ip_network(prefix, strict=False)
        counter = self._next_private.setdefault(subnet_id.lower(), itertools.count(4))
        return str(net.network_address + next(counter))  # Azure keeps .0 to .3 for itself

    def _made_up_public(self) -> str:
        return str(_PUBLIC_POOL.network_address + 0x10000 + next(self._next_public))

    # -- long-running operations -----------------------------------------------------------

    def _async(self, location: str, namespace: str, work: Callable[[], Any], *,
               status: int, body: Any = None) -> _Answer:
        op_id = str(uuid.uuid4())
        assert self._pool is not None
        self._ops[op_id] = _Operation(op_id, self._pool.submit(work))
        url = (f"{self.endpoint}/subscriptions/{self.subscription_id}/providers/{namespace}"
               f"/locations/{location}/operations/{op_id}?api-version=2024-07-01")
        headers = (("Azure-AsyncOperation", url), ("Location", url + "&monitor=true"),
                   *self._retry_after())
        return _Answer(status, body, headers)

    def _retry_after(self) -> tuple[tuple[str, str], ...]:
        return () if self.poll_after is None else (("Retry-After", str(int(self.poll_after))),)

    def _operation(self, op_id: str) -> _Answer:
        op = self._ops.get(op_id)
        if op is None:
            raise ARMError(404, "NotFound", f"Operation {op_id} was not found.")
        op.polls += 1
        out: dict[str, Any] = {"name": op.id, "startTime": op.started}
        headers = self._retry_after()
        if op.polls < 2 or not op.future.done():
            out["status"] = "InProgress"
            return _Answer(200, out, headers)
        out["endTime"] = _now()
        exc = op.future.exception()
        if exc is None:
            out["status"] = "Succeeded"
        else:
            code, message = ((exc.code, exc.message) if isinstance(exc, ARMError)
                             else ("InternalExecutionError", f"fake ARM: {exc!r}"))
            out.update(status="Failed", error={"code": code, "message": message})
        return _Answer(200, out, headers)

    # -- virtual machines --------------------------------------------------------------------

    def _vm_put(self, key: str, rid: str, parts: list[str], body: dict[str, Any]) -> _Answer:
        props = dict(body.get("properties") or {})
        old = self._resources.get(key)
        if old is not None:  # an update: tags and the like, no new twin
            old["tags"] = body.get("tags") or {}
            return _Answer(200, self._public(old))
        size = (props.get("hardwareProfile") or {}).get("vmSize")
        if not size:
            raise ARMError(400, "InvalidParameter", "Required parameter 'hardwareProfile.vmSize'"
                                                    " is missing (null).")
        os_profile = props.get("osProfile") or {}
        user = os_profile.get("adminUsername")
        if not user:
            raise ARMError(400, "InvalidParameter", "Required parameter 'adminUsername' is"
                                                    " missing (null).")
        if props.get("priority") == "Spot" and not props.get("evictionPolicy"):
            props["evictionPolicy"] = "Deallocate"
        nic_keys = []
        for ref in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
            nic = self._resources.get((ref.get("id") or "").lower())
            if nic is None:
                raise ARMError(400, "InvalidResourceReference",
                               f"Resource {ref.get('id')} referenced by resource {rid} was not"
                               " found.")
            if nic["properties"].get("virtualMachine"):
                raise ARMError(400, "NicInUse", f"Network Interface {nic['id']} is used by"
                                                f" existing resource"
                                                f" {nic['properties']['virtualMachine']['id']}.")
            nic_keys.append(nic["id"].lower())
        if not nic_keys:
            raise ARMError(400, "InvalidParameter", "At least one network interface is required.")
        props.update(provisioningState="Creating", vmId=str(uuid.uuid4()), timeCreated=_now())
        disk_key = self._os_disk(parts, rid, body, props)
        osp = props.setdefault("osProfile", {})
        osp.pop("adminPassword", None)
        osp.pop("customData", None)
        vm = {"id": rid, "name": parts[7], "type": "Microsoft.Compute/virtualMachines",
              "location": body["location"], "tags": body.get("tags") or {}, "properties": props,
              "_power": "starting", "_nics": nic_keys, "_disk": disk_key}
        if "zones" in body:
            vm["zones"] = body["zones"]
        self._resources[key] = vm
        for nic_key in nic_keys:
            self._resources[nic_key]["properties"]["virtualMachine"] = {"id": rid}
        rule = self._take_rule("vm_create", ["subscriptions"], json.dumps(body).encode(),
                               want_async=True)
        keys = [k["keyData"] for k in
                ((os_profile.get("linuxConfiguration") or {}).get("ssh") or {}).get(
                    "publicKeys") or [] if k.get("keyData")]
        custom = os_profile.get("customData")

        def create() -> None:
            if rule is not None:
                raise ARMError(rule.status, rule.code,
                               rule.message or _MESSAGES.get(rule.code, f"{rule.code}."))
            twin = None
            if self.twins is not None:
                twin = self.twins.create(f"{parts[7][:40]}-{props['vmId'][:8]}",
                                         _cloud_config(user, keys, custom))
            with self._lock:
                if key not in self._resources:  # deleted meanwhile
                    if twin is not None:
                        twin.terminate()
                    return
                if twin is not None:
                    self._twins_by_vm[key] = twin
                vm["_power"] = "running"
                props["provisioningState"] = "Succeeded"
                self._sync_addresses(key)

        def outcome() -> None:
            try:
                create()
            except BaseException:
                with self._lock:
                    props["provisioningState"] = "Failed"
                    vm["_power"] = "deallocated"
                raise

        return self._async(body["location"], "Microsoft.Compute", outcome, status=201,
                           body=self._public(vm))

    def _sync_addresses(self, key: str) -> None:
        """Write the VM's power state's addresses (its twin's, or made up) into its NICs' IPs."""
        vm = self._resources.get(key)
        if vm is None:
            return
        twin = self._twins_by_vm.get(key)
        running = vm["_power"] in ("running", "stopped")
        for nic_key in vm["_nics"]:
            nic = self._resources.get(nic_key)
            if nic is None:
                continue
            for config in nic["properties"].get("ipConfigurations") or []:
                cprops = config["properties"]
                if twin is not None and cprops.get("primary"):
                    cprops["privateIPAddress"] = twin.private_ip
                pip_id = (cprops.get("publicIPAddress") or {}).get("id")
                pip = self._resources.get((pip_id or "").lower())
                if pip is None:
                    continue
                pprops = pip["properties"]
                static = pprops.get("publicIPAllocationMethod") == "Static"
                if twin is not None:
                    if twin.public_ip:
                        pprops["ipAddress"] = twin.public_ip
                    elif not static:
                        pprops.pop("ipAddress", None)
                elif running and not pprops.get("ipAddress"):
                    pprops["ipAddress"] = self._made_up_public()
                elif vm["_power"] == "deallocated" and not static:
                    pprops.pop("ipAddress", None)

    def _instance_view(self, vm: dict[str, Any]) -> dict[str, Any]:
        state = vm["properties"].get("provisioningState", "Succeeded")
        statuses = [{"code": f"ProvisioningState/{state.lower()}", "level":
                     "Error" if state == "Failed" else "Info",
                     "displayStatus": f"Provisioning {state.lower()}"}]
        power = vm["_power"]
        if state != "Creating" or power != "starting":
            statuses.append({"code": f"PowerState/{power}", "level": "Info",
                             "displayStatus": _POWER_TEXT.get(power, power)})
        return {"computerName": (vm["properties"].get("osProfile") or {}).get("computerName"),
                "osName": "ubuntu", "statuses": statuses}

    def _vm_sub(self, method: str, key: str, rest: list[str], query: dict[str, str],
                parts: list[str]) -> _Answer:
        vm = self._get(key, "Microsoft.Compute/virtualMachines", parts)
        if rest == ["instanceview"] and method == "GET":
            return _Answer(200, self._instance_view(vm))
        if method != "POST" or rest[0] not in ("deallocate", "start", "poweroff"):
            raise ARMError(404, "InvalidResourceType", f"The fake ARM does not serve {rest}.")
        if vm["properties"].get("provisioningState") == "Creating":
            raise ARMError(409, "OperationNotAllowed", "The VM is still being created.")
        verb = rest[0]
        twin = self._twins_by_vm.get(key)
        rule = self._take_rule("vm_start", [p.lower() for p in parts], b"", want_async=True) \
            if verb == "start" else None
        before = vm["_power"]
        vm["_power"] = {"deallocate": "deallocating", "start": "starting",
                        "poweroff": "stopping"}[verb]

        def act() -> None:
            if rule is not None:
                with self._lock:
                    vm["_power"] = before
                raise ARMError(rule.status, rule.code,
                               rule.message or _MESSAGES.get(rule.code, f"{rule.code}."))
            if twin is not None:
                (twin.start if verb == "start" else twin.stop)()
            with self._lock:
                vm["_power"] = {"deallocate": "deallocated", "start": "running",
                                "poweroff": "stopped"}[verb]
                self._sync_addresses(key)

        return self._async(vm["location"], "Microsoft.Compute", act, status=202)

    def _vm_delete(self, key: str, parts: list[str]) -> _Answer:
        vm = self._resources[key]
        twin = self._twins_by_vm.get(key)
        self._remove_vm(key)
        return self._async(vm["location"], "Microsoft.Compute",
                           (twin.terminate if twin is not None else (lambda: None)), status=202)

    def _remove_vm(self, key: str, delete_disks: bool = False) -> None:
        vm = self._resources.pop(key, None)
        self._twins_by_vm.pop(key, None)
        if vm is None:
            return
        disk = self._resources.get(vm.get("_disk") or "")
        if disk is not None:
            os_disk = vm["properties"]["storageProfile"]["osDisk"]
            if delete_disks or os_disk.get("deleteOption") == "Delete":
                del self._resources[vm["_disk"]]
            else:  # Detach, the default: the disk stays, unattached
                disk.pop("managedBy", None)
                disk["properties"]["diskState"] = "Unattached"
        for nic_key in vm["_nics"]:
            nic = self._resources.get(nic_key)
            if nic is not None:
                nic["properties"].pop("virtualMachine", None)
        # Dynamic public addresses go with the VM.
        for nic_key in vm["_nics"]:
            nic = self._resources.get(nic_key)
            for config in (nic or {}).get("properties", {}).get("ipConfigurations") or []:
                pip_id = (config["properties"].get("publicIPAddress") or {}).get("id")
                pip = self._resources.get((pip_id or "").lower())
                if pip is not None and \
                        pip["properties"].get("publicIPAllocationMethod") != "Static":
                    pip["properties"].pop("ipAddress", None)


    def _os_disk(self, parts: list[str], vm_id: str, body: dict[str, Any],
                 props: dict[str, Any]) -> str:
        """Create the VM's managed OS disk from ``storageProfile.osDisk``; return its key.

        Written back into the VM's osDisk as Azure does (name, size, the disk's id).
        """
        storage = props.setdefault("storageProfile", {})
        os_disk = storage.setdefault("osDisk", {})
        image = storage.get("imageReference") or {}
        if not (image.get("id") or all(image.get(k) for k in ("publisher", "offer", "sku"))):
            raise ARMError(400, "InvalidParameter", "The value of parameter imageReference is"
                                                    " invalid: give an id, or publisher, offer and"
                                                    " sku.")
        name = os_disk.get("name") or f"{parts[7]}_OsDisk_1_{secrets.token_hex(16)}"
        managed = os_disk.setdefault("managedDisk", {})
        sku = managed.get("storageAccountType") or "Standard_LRS"
        disk_id = "/" + "/".join([*parts[:4], "providers", "Microsoft.Compute", "disks", name])
        key = disk_id.lower()
        if key in self._resources:
            raise ARMError(409, "ConflictingUserInput", f"Disk {name} already exists in resource"
                                                        f" group {parts[3].upper()}.")
        size = int(os_disk.get("diskSizeGB") or 30)
        os_disk.update(name=name, diskSizeGB=size, createOption=os_disk.get("createOption")
                       or "FromImage", deleteOption=os_disk.get("deleteOption") or "Detach",
                       osType="Linux")
        managed.update(id=disk_id, storageAccountType=sku)
        self._resources[key] = {
            "id": disk_id, "name": name, "type": "Microsoft.Compute/disks",
            "location": body["location"], "tags": body.get("tags") or {}, "managedBy": vm_id,
            "sku": {"name": sku, "tier": sku.split("_")[0]},
            **({"zones": body["zones"]} if "zones" in body else {}),
            "properties": {"osType": "Linux", "diskSizeGB": size, "diskState": "Attached",
                           "provisioningState": "Succeeded", "timeCreated": _now(),
                           "creationData": {"createOption": "FromImage",
                                            "imageReference": dict(image)}}}
        return key

    def _disk_delete(self, key: str) -> _Answer:
        disk = self._resources[key]
        if disk.get("managedBy") and disk["managedBy"].lower() in self._resources:
            raise ARMError(409, "OperationNotAllowed", f"Disk {disk['name']} is attached to VM"
                                                       f" {disk['managedBy']}.")
        del self._resources[key]
        return self._async(disk["location"], "Microsoft.Compute", lambda: None, status=202)


def _tag_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """ARM's resource group ``$filter``: ``tagName eq 'k' and tagValue eq 'v'`` (or the name alone)."""
    found = dict(re.findall(r"(tagName|tagValue)\s+eq\s+'([^']*)'", text))
    if "tagName" not in found:
        raise ARMError(400, "InvalidFilterInQueryString", f"Invalid $filter '{text}'.")
    name, value = found["tagName"], found.get("tagValue")

    def matches(group: dict[str, Any]) -> bool:
        tags = group.get("tags") or {}
        return name in tags and (value is None or tags[name] == value)

    return matches


_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def _cloud_config(user: str, keys: list[str], custom_data: str | None) -> str:
    """The ``#cloud-config`` Azure's provisioning amounts to: the admin user, its keys, sudo.

    A ``#cloud-config`` in ``customData`` (base64) keeps its other users.
    """
    import yaml

    config: dict[str, Any] = {}
    if custom_data:
        try:
            text = base64.b64decode(custom_data).decode("utf-8", "replace")
            if text.startswith("#cloud-config"):
                config = yaml.safe_load(text) or {}
        except (ValueError, yaml.YAMLError):
            config = {}
    users = [u for u in (config.get("users") or []) if u != "default"]
    users.append({"name": user, "ssh_authorized_keys": keys,
                  "sudo": "ALL=(ALL) NOPASSWD:ALL", "shell": "/bin/bash"})
    return "#cloud-config\n" + yaml.safe_dump({"users": users})

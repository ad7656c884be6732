"""A fake EC2 for tests: moto's EC2 server behind a thin layer of our own.

:class:`FakeEC2` runs moto's EC2 Flask app in this process, wrapped by a WSGI
middleware, on ``127.0.0.1:<free port>``. Code under test reaches it only
through standard AWS configuration (``AWS_ENDPOINT_URL_EC2``, credentials and
region variables, see :meth:`FakeEC2.env`), never through test switches. The
middleware adds what moto does not do:

- **credentials**: only the test bed's access key, with a valid SigV4
  signature, is accepted; anything else is ``AuthFailure`` (401);
- **faults by rule** (:meth:`FakeEC2.fail`): matching requests get EC2's own
  error document and HTTP status before moto sees them;
- **AMIs**: the catalog's images (``aws/images.csv``) exist in moto with their
  real ids, and RunInstances with an unknown or malformed ImageId fails as
  EC2 does;
- **node twins** (optional): each instance is backed by a real sandbox from a
  ``TwinHost``; its addresses replace moto's made-up ones in moto's own
  objects, and stop, start, terminate, preemption and a shutdown run on the
  node are applied to both;
- a record of every request (:attr:`FakeEC2.calls`) for assertions.

Reusing it in a plugin's tests (``tests/`` is on pytest's ``pythonpath``)::

    from fakecloud import FakeEC2

    @pytest.fixture
    def fake_ec2(shared_catalogs):
        with FakeEC2(catalog_dir=shared_catalogs) as ec2:
            yield ec2

    def test_capacity_moves_on(fake_ec2, skyk):
        fake_ec2.fail("InsufficientInstanceCapacity", zone="us-east-1a")
        result = skyk("launch", "--cloud", "aws", ..., env=fake_ec2.env())
        assert [c.error for c in fake_ec2.calls if c.action == "RunInstances"][0] == \\
            "InsufficientInstanceCapacity"

Mind botocore's own retries: by default it sends a call that got a 5xx or a
throttling error again (up to 4 more times in its legacy mode), so a rule
with ``times=1`` can be absorbed by the client before the code under test
sees it; ``times=None`` models a zone that stays out of capacity, and
:attr:`FakeEC2.calls` shows every round trip. In-process code gets a client
without retries from :meth:`FakeEC2.client`. Each test bed is
its own moto account, so beds never see each other's resources, even when
two run at once; ``close()`` drops the account from moto again. With a twin
host, build it with ``on_shutdown=`` pointing at
:meth:`FakeEC2.twin_shut_down` (or leave it None and FakeEC2 attaches itself).
"""

from __future__ import annotations

import base64
import binascii
import csv
import gzip
import http
import io
import itertools
import logging
import os
import re
import secrets
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from . import sigv4
from .aws_accounts import drop_moto_account, empty_config_dir, sdk_env
from .faults import RequestFacts, Rule, error_response
from .serving import LoopbackServer

if TYPE_CHECKING:
    from .twins import Twin, TwinHost

__all__ = ["Call", "FakeEC2"]

log = logging.getLogger(__name__)

#: The region ``env()`` names and ``client()`` uses unless told otherwise.
DEFAULT_REGION = "us-east-1"
#: Real catalogs beside the repository (``../shared/catalogs``), the default ``catalog_dir``.
SHARED_CATALOGS = Path(__file__).resolve().parents[3] / "shared" / "catalogs"
#: The owner the catalog's images get in moto: AWS's documentation account, not ours.
CATALOG_IMAGE_OWNER = "111122223333"
#: EC2 refuses user data over 16 KiB (before base64).
USER_DATA_LIMIT = 16384

_EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
ET.register_namespace("", _EC2_XMLNS)
_AMI_ID = re.compile(r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_INSTANCE_ACTIONS = ("StartInstances", "StopInstances", "TerminateInstances")
# Ways to get an instance or an address that bypass RunInstances, so no twin would back them:
# with twins they are refused rather than hand out moto's made-up addresses.
_UNTWINNED_ACTIONS = ("CreateFleet", "RequestSpotInstances", "RequestSpotFleet",
                      "AssociateAddress")
# Each test bed is a moto account of its own: 12 digits, never moto's default 123456789012.
_BEDS = itertools.count(1)
_LOAD_MOTO_AMIS = "MOTO_EC2_LOAD_DEFAULT_AMIS"
_ACCOUNT_BASE = 210_000_000_000


@dataclass(frozen=True)
class Call:
    """One EC2 request the test bed answered."""

    #: Wall-clock time (``time.time()``) the request arrived.
    time: float
    #: The Query API action, e.g. ``RunInstances`` (None if the request named none).
    action: str | None
    #: The region from the request's SigV4 scope (None if unsigned).
    region: str | None
    #: The request's parameters but ``Action`` and ``Version``; ``UserData`` is replaced by its size.
    params: dict[str, str]
    #: The HTTP status of the answer.
    status: int
    #: The EC2 error code of the answer, None on success.
    error: str | None
    #: Whether an injected rule answered it (moto never saw it).
    fault: bool = False
    #: Seconds the answer took.
    duration: float = 0.0


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    fault: bool = False


@contextmanager
def _without_moto_images() -> Iterator[None]:
    """Create moto EC2 backends inside this without moto's ~1400 sample AMIs.

    moto reads MOTO_EC2_LOAD_DEFAULT_AMIS when it builds a region's backend,
    and builds backends only under its ``backend_lock``, so setting the
    variable while holding that lock affects only the backends built here.
    The bed's images are then the catalog's alone, and a region costs
    milliseconds instead of a tenth of a second.
    """
    from moto.core.base_backend import backend_lock

    with backend_lock:
        before = os.environ.get(_LOAD_MOTO_AMIS)
        os.environ[_LOAD_MOTO_AMIS] = "false"
        try:
            yield
        finally:
            if before is None:
                del os.environ[_LOAD_MOTO_AMIS]
            else:
                os.environ[_LOAD_MOTO_AMIS] = before


@lru_cache(maxsize=1)
def _moto_app() -> Callable[..., Iterable[bytes]]:
    """moto's EC2 Flask app; it holds no state of its own, so every bed shares it."""
    from moto.moto_server.werkzeug_app import create_backend_app

    with _without_moto_images():  # it builds moto's default account's us-east-1 for its routes
        return create_backend_app("ec2")


@lru_cache(maxsize=8)
def _catalog_images(images_csv: Path) -> dict[str, list[dict[str, str]]]:
    """The catalog's image rows by region."""
    by_region: dict[str, list[dict[str, str]]] = {}
    if not images_csv.is_file():
        return by_region
    with images_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Region") and row.get("ImageId"):
                by_region.setdefault(row["Region"], []).append(row)
    return by_region


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_text(body: bytes, name: str) -> str | None:
    """Text of the first element named ``name`` (any namespace) in ``body``, or None."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for element in root.iter():
        if _local(element.tag) == name:
            return element.text
    return None


def _indexed(params: dict[str, str], prefix: str, suffix: str = "") -> list[str]:
    """Values of ``PREFIX.N[SUFFIX]`` parameters in N order (EC2's list encoding)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)" + re.escape(suffix) + "$")
    found = [(int(m.group(1)), value) for key, value in params.items()
             if (m := pattern.match(key))]
    return [value for _, value in sorted(found)]


def _decode_user_data(encoded: str) -> bytes:
    """The raw bytes of a base64 ``UserData`` parameter; ValueError if it is not base64."""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("Invalid BASE64 encoding of user data.") from exc


def _user_data_text(raw: bytes) -> str:
    """User data as the node's cloud-init reads it: gzip unpacked, UTF-8 text."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


class FakeEC2:
    """moto's EC2 server in this process, behind our WSGI layer, on 127.0.0.1:<free port>.

    ``twins``: a ``TwinHost`` whose sandboxes back the instances (None: pure
    moto, faults and the AMI rules). ``catalog_dir``: a catalog directory
    whose ``aws/images.csv`` images are registered in moto (default: the
    shared catalogs beside the repository, when present). Use it as a
    context manager, or call :meth:`start` and :meth:`close`; the twin host
    stays the caller's to close.
    """

    def __init__(self, *, twins: TwinHost | None = None, catalog_dir: Path | None = None):
        self.twins = twins
        if catalog_dir is None and (SHARED_CATALOGS / "aws" / "images.csv").is_file():
            catalog_dir = SHARED_CATALOGS
        self.catalog_dir = catalog_dir
        bed = next(_BEDS)
        #: The moto account this bed's resources live in.
        self.account_id = f"{_ACCOUNT_BASE + bed:012d}"
        #: The only access key the bed accepts, and its secret.
        self.access_key = f"AKIAFAKEEC2{bed:09d}"
        self.secret_key = secrets.token_hex(20)
        #: ``http://127.0.0.1:PORT`` once started.
        self.endpoint = ""
        #: Failures in background work (twin shutdowns), as messages; tests may assert it is empty.
        self.errors: list[str] = []
        # One lock over moto and the twins: every request that reaches moto, and every change
        # made behind its back (twin addresses, preemption, shutdowns), holds it, so no answer
        # ever shows an instance between moto's change and ours.
        self._moto_lock = threading.RLock()
        self._record_lock = threading.Lock()
        self._rules: list[Rule] = []
        self._calls: list[Call] = []
        self._twins_by_id: dict[str, Twin] = {}
        self._regions_ready: dict[str, Any] = {}
        self._server: LoopbackServer | None = None
        self._config_dir: Path | None = None
        self._shutdowns: list[str] = []
        self._shutdowns_cv = threading.Condition()
        self._shutdown_busy = False
        self._worker: threading.Thread | None = None
        self._closing = False

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> FakeEC2:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> FakeEC2:
        """Start serving on a free loopback port; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeEC2 already started")
        if "MOTO_ACCOUNT_ID" in os.environ:
            # moto would put every request in that account instead of this bed's.
            raise RuntimeError("unset MOTO_ACCOUNT_ID: FakeEC2 gives each bed its own account")
        _moto_app()
        self._drop_account()
        self._config_dir = empty_config_dir("fakeec2-")
        self._server = LoopbackServer(self._wsgi, "fakeec2")
        self.endpoint = self._server.endpoint
        if self.twins is not None:
            if getattr(self.twins, "on_shutdown", False) is None:
                self.twins.on_shutdown = self.twin_shut_down  # type: ignore[union-attr]
            self._closing = False
            self._worker = threading.Thread(target=self._shutdown_worker, daemon=True,
                                            name="fakeec2-shutdowns")
            self._worker.start()
        return self

    def close(self) -> None:
        """Stop the server and forget the bed's moto account (the twin host is the caller's)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._worker is not None:
            with self._shutdowns_cv:
                self._closing = True
                self._shutdowns_cv.notify_all()
            self._worker.join(timeout=10)
            self._worker = None
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None
        with self._moto_lock:
            self._drop_account()

    def _drop_account(self) -> None:
        """Remove this bed's account from every moto backend, so it starts (or ends) empty."""
        drop_moto_account(self.account_id)
        self._regions_ready.clear()

    # -- what tests and subprocesses use ------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment a ``skyk`` subprocess needs to use this EC2 and nothing else.

        The endpoint, the bed's credentials and region, empty AWS config and
        credentials files (so no profile of the user's leaks in) and no
        instance-metadata lookups. Start from an environment without other
        ``AWS_*`` variables (the suite's ``isolated_home`` fixture clears them).
        """
        if self._config_dir is None:
            raise RuntimeError("start the FakeEC2 first")
        return {"AWS_ENDPOINT_URL_EC2": self.endpoint,
                **sdk_env(self._config_dir, self.access_key, self.secret_key, DEFAULT_REGION)}

    def client(self, region: str = DEFAULT_REGION, *, access_key: str | None = None,
               secret_key: str | None = None, attempts: int = 1) -> Any:
        """A boto3 EC2 client for this bed that tries each call ``attempts`` times in all.

        botocore's ``max_attempts`` counts retries after the first try, so
        ``retries={"max_attempts": 1}`` still retries a 5xx once; this sets
        ``total_max_attempts``, which counts every try.
        """
        import boto3
        from botocore.config import Config

        return boto3.client(
            "ec2", region_name=region, endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(retries={"total_max_attempts": attempts}))

    def fail(self, code: str, *, action: str | None = "RunInstances", region: str | None = None,
             zone: str | None = None, instance_type: str | None = None,
             spot: bool | None = None, times: int | None = 1, message: str | None = None,
             status: int | None = None) -> Rule:
        """Make matching requests fail with EC2 error ``code``; returns the rule.

        None matches anything; ``zone`` matches requests that name it in
        ``Placement.AvailabilityZone`` or through a subnet in it; ``spot``
        True matches ``InstanceMarketOptions.MarketType=spot`` requests and
        False the others. The first rule (in the order added) that matches
        and has ``times`` left answers, with EC2's status for the code
        (``status`` overrides it); ``times=None`` answers every match.
        """
        rule = Rule(code, action=action, region=region, zone=zone, instance_type=instance_type,
                    spot=spot, times=times, message=message, status=status)
        with self._record_lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Remove every rule added by :meth:`fail`."""
        with self._record_lock:
            self._rules.clear()

    @property
    def calls(self) -> list[Call]:
        """Every EC2 request answered so far, in the order answered (a copy)."""
        with self._record_lock:
            return list(self._calls)

    def preempt(self, instance_id: str) -> None:
        """AWS reclaims spot instance ``instance_id``: terminated, reason Server.SpotInstanceTermination.

        Its twin, if any, is terminated too. Raises KeyError for an unknown
        instance and ValueError for one that is not spot.
        """
        from moto.ec2.models.instances import StateReason

        with self._moto_lock:
            instance = self._find_instance(instance_id)
            if instance.lifecycle != "spot":
                raise ValueError(f"{instance_id} is an on-demand instance; AWS reclaims only spot")
            if instance.state == "terminated":
                return
            instance.terminate()
            instance.state_reason = StateReason(
                "Server.SpotInstanceTermination: Spot instance termination",
                "Server.SpotInstanceTermination")
            instance._reason = f"Service initiated ({_utc_stamp()})"
            twin = self._twins_by_id.get(instance_id)
            if twin is not None and twin.state != "terminated":
                twin.terminate()

    def twin_shut_down(self, twin: Twin) -> None:
        """The twin host's ``on_shutdown``: the node ran ``shutdown``.

        Applied in the background as an instance-initiated shutdown: the
        instance stops, or terminates if its InstanceInitiatedShutdownBehavior
        is ``terminate``, with reason Client.InstanceInitiatedShutdown. See
        :meth:`settle` to wait for it.
        """
        with self._shutdowns_cv:
            self._shutdowns.append(twin.name)
            self._shutdowns_cv.notify_all()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every reported twin shutdown has been applied; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._shutdowns_cv:
            while self._shutdowns or self._shutdown_busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"twin shutdowns still pending: {self._shutdowns}")
                self._shutdowns_cv.wait(left)

    def busy_spans(self) -> list[tuple[float, float]]:
        """When the bed worked (``time.time()`` pairs): each request it answered, booting the
        twins of RunInstances included (see :mod:`fakecloud.timing`)."""
        return [(c.time, c.time + c.duration) for c in self.calls]

    def instances(self, region: str | None = None) -> list[dict[str, Any]]:
        """The bed's instances (in ``region``, or all), as plain dicts for assertions.

        Keys: id, region, zone, state, type, image_id, spot, tags, private_ip,
        public_ip, shutdown_behavior, state_reason (code or None),
        state_reason_message, state_transition_reason, key_name, subnet_id,
        vpc_id, security_groups (ids), user_data (text or None).
        """
        with self._moto_lock:
            return [self._describe(region_name, instance)
                    for region_name, backend in self._backends(region)
                    for instance in backend.all_instances()]

    def security_groups(self, region: str | None = None) -> list[dict[str, Any]]:
        """The bed's security groups (in ``region``, or all), as plain dicts.

        Keys: id, region, name, description, vpc_id, tags, ingress (a list of
        {protocol, from_port, to_port, cidr, group}).
        """
        with self._moto_lock:
            groups = []
            for region_name, backend in self._backends(region):
                for by_id in backend.groups.values():
                    for group in by_id.values():
                        groups.append({
                            "id": group.id, "region": region_name, "name": group.name,
                            "description": group.description, "vpc_id": group.vpc_id,
                            "tags": {t["key"]: t["value"] for t in group.get_tags()},
                            "ingress": [{"protocol": rule.ip_protocol,
                                         "from_port": rule.from_port, "to_port": rule.to_port,
                                         "cidr": rule.ip_range.get("CidrIp"),
                                         "group": rule.source_group.get("GroupId")}
                                        for rule in group.ingress_rules],
                        })
            return groups

    def remove_default_vpc(self, region: str) -> None:
        """Delete ``region``'s default VPC with its subnets, gateways and security groups.

        Afterwards RunInstances without a subnet, and CreateSecurityGroup
        without a VpcId, fail with VPCIdNotSpecified, as in an account whose
        default VPC was deleted. Raises RuntimeError while instances use it.
        """
        with self._moto_lock:
            backend = self._backend(region)
            vpc = backend.get_default_vpc()
            if vpc is None:
                return
            live = [i.id for i in backend.all_instances()
                    if i.vpc_id == vpc.id and i.state != "terminated"]
            if live:
                raise RuntimeError(f"instances {live} still use the default VPC of {region}")
            for subnet in backend.describe_subnets(filters={"vpc-id": [vpc.id]}):
                backend.delete_subnet(subnet.id)
            for gateway in backend.describe_internet_gateways(
                    filters={"attachment.vpc-id": [vpc.id]}):
                backend.detach_internet_gateway(gateway.id, vpc.id)
                backend.delete_internet_gateway(gateway.id)
            for group in list(backend.groups.get(vpc.id, {}).values()):
                if not group.is_default:
                    backend.delete_security_group(group_id=group.id)
            backend.delete_vpc(vpc.id)

    # -- moto's state ---------------------------------------------------------------------

    def _backends(self, region: str | None) -> list[tuple[str, Any]]:
        from moto.ec2.models import ec2_backends

        if region is not None:
            return [(region, self._backend(region))]
        if self.account_id not in ec2_backends.keys():
            return []
        return sorted(ec2_backends[self.account_id].items())

    def _backend(self, region: str) -> Any:
        """moto's EC2 backend of this bed in ``region``, with the catalog's images registered."""
        from moto.ec2.models import ec2_backends

        account = ec2_backends[self.account_id]
        if region in account.keys():
            backend = account[region]
        else:
            with _without_moto_images():
                backend = account[region]
        # By identity, not by name: a moto reset (another test's mock_aws) builds new backends.
        if self._regions_ready.get(region) is not backend:
            self._register_images(region, backend)
            self._regions_ready[region] = backend
        return backend

    def _known_region(self, region: str) -> bool:
        from moto.ec2.models import ec2_backends

        return region in ec2_backends[self.account_id].regions

    def _register_images(self, region: str, backend: Any) -> None:
        if self.catalog_dir is None:
            return
        from moto.ec2.models.amis import Ami

        for row in _catalog_images(Path(self.catalog_dir) / "aws" / "images.csv").get(region, []):
            if row["ImageId"] in backend.amis:
                continue
            tag = row.get("Tag", "")
            try:
                created = datetime.strptime(row.get("CreationDate", ""), "%Y%m%d").replace(
                    tzinfo=timezone.utc)
            except ValueError:
                created = None
            backend.amis[row["ImageId"]] = Ami(
                backend, ami_id=row["ImageId"], name=tag,
                description=f"{tag} ({row.get('OS', '')} {row.get('OSVersion', '')})".strip(),
                owner_id=CATALOG_IMAGE_OWNER, public=True, virtualization_type="hvm",
                architecture="arm64" if "arm64" in tag else "x86_64",
                root_device_type="ebs", root_device_name="/dev/sda1", hypervisor="xen",
                creation_date=created, tags={"Tag": tag} if tag else None)

    def _find_instance(self, instance_id: str) -> Any:
        for _, backend in self._backends(None):
            for instance in backend.all_instances():
                if instance.id == instance_id:
                    return instance
        raise KeyError(f"no instance {instance_id} in this FakeEC2")

    def _describe(self, region: str, instance: Any) -> dict[str, Any]:
        user_data = None
        if instance.user_data:  # moto keeps it as a Base64EncodedString
            try:
                encoded = instance.user_data.as_bytes().decode("ascii")
                user_data = _user_data_text(_decode_user_data(encoded))
            except (ValueError, OSError):
                user_data = None
        reason = instance.state_reason
        return {
            "id": instance.id, "region": region, "zone": instance.placement.zone,
            "state": instance.state, "type": instance.instance_type,
            "image_id": instance.image_id, "spot": instance.lifecycle == "spot",
            "tags": {t["key"]: t["value"] for t in instance.get_tags()},
            "private_ip": instance.private_ip, "public_ip": instance.public_ip,
            "shutdown_behavior": instance.instance_initiated_shutdown_behavior,
            "state_reason": reason.code or None, "state_reason_message": reason.message or None,
            "state_transition_reason": instance.state_transition_reason or None,
            "key_name": instance.key_name, "subnet_id": instance.subnet_id,
            "vpc_id": instance.vpc_id, "security_groups": [g.id for g in instance.security_groups],
            "user_data": user_data,
        }

    # -- the WSGI layer -------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started, clock = time.time(), time.perf_counter()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else b""
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        params.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        action = params.get("Action")
        region, auth_error = self._authenticate(environ, body)
        try:
            if auth_error:
                answer = _Answer(*error_response("AuthFailure", auth_error))
            else:
                assert region is not None
                answer = self._handle(environ, body, params, action, region)
        except Exception as exc:  # a bug here must reach the test as an answer, not a hang
            log.exception("fake EC2 failed on %s", action)
            self.errors.append(f"{action}: {exc!r}")
            answer = _Answer(*error_response("InternalError", f"fake EC2: {exc!r}"))
        headers = [(k, v) for k, v in answer.headers if k.lower() != "content-length"]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "text/xml;charset=UTF-8"))
        headers.append(("Content-Length", str(len(answer.body))))
        error = _xml_text(answer.body, "Code") if answer.status >= 400 else None
        shown = {k: v for k, v in params.items() if k not in ("Action", "Version")}
        if "UserData" in shown:
            shown["UserData"] = f"<{len(shown['UserData'])} base64 characters>"
        with self._record_lock:
            self._calls.append(Call(started, action, region, shown, answer.status, error,
                                    answer.fault, time.perf_counter() - clock))
        start_response(f"{answer.status} {_phrase(answer.status)}", headers)
        return [answer.body]

    def _authenticate(self, environ: dict[str, Any], body: bytes) -> tuple[str | None, str | None]:
        """``(region, None)`` for a request signed with the bed's key, else ``(region, why)``."""
        return sigv4.authenticate(environ, body, self.access_key, self.secret_key)

    def _handle(self, environ: dict[str, Any], body: bytes, params: dict[str, str],
                action: str | None, region: str) -> _Answer:
        if not self._known_region(region):
            return _Answer(*error_response(
                "AuthFailure", f"The region {region} is not enabled for this account."))
        with self._moto_lock:
            self._backend(region)
            facts = self._facts(action, region, params)
            refusal = self._refusal(action, region, params)
        if refusal is not None:
            return refusal
        with self._record_lock:
            rules = list(self._rules)
        for rule in rules:
            if rule.take(facts):
                return _Answer(*rule.response(), fault=True)
        body = self._translated(action, params) or body
        if self.twins is not None and action == "RunInstances":
            return self._run_instances(environ, body, params, region)
        if self.twins is not None and action in _INSTANCE_ACTIONS:
            return self._instance_action(environ, body, params, action, region)
        with self._moto_lock:
            return self._forward(environ, body)

    def _facts(self, action: str | None, region: str, params: dict[str, str]) -> RequestFacts:
        zone = params.get("Placement.AvailabilityZone") or None
        if zone is None:
            subnets = [params["SubnetId"]] if params.get("SubnetId") else []
            subnets += _indexed(params, "NetworkInterface", ".SubnetId")
            for subnet_id in subnets:
                try:
                    zone = self._backend(region).get_subnet(subnet_id).availability_zone
                    break
                except Exception:  # an unknown subnet names no zone; moto will refuse it
                    continue
        return RequestFacts(action=action, region=region, zone=zone,
                            instance_type=params.get("InstanceType") or None,
                            spot=params.get("InstanceMarketOptions.MarketType") == "spot")

    def _refusal(self, action: str | None, region: str, params: dict[str, str]) -> _Answer | None:
        """EC2's answer to a request moto would wrongly accept, or None to go on."""
        backend = self._backend(region)
        if self.twins is not None and action in _UNTWINNED_ACTIONS:
            return _Answer(*error_response(
                "UnsupportedOperation",
                f"{action} is not supported by this test bed: node twins back only"
                " instances from RunInstances."))
        if action == "RunInstances" and (refusal := self._check_run_instances(backend, params)):
            return refusal
        if action in ("StartInstances", "StopInstances"):
            verb = "started" if action == "StartInstances" else "stopped"
            for instance_id in _indexed(params, "InstanceId"):
                try:
                    state = backend.get_instance(instance_id).state
                except Exception:
                    continue  # moto answers InvalidInstanceID.NotFound itself
                if state in ("terminated", "shutting-down"):
                    return _Answer(*error_response(
                        "IncorrectInstanceState",
                        f"The instance '{instance_id}' is not in a state from which it can be"
                        f" {verb}."))
        behavior = (params.get("InstanceInitiatedShutdownBehavior.Value")
                    if action == "ModifyInstanceAttribute"
                    else params.get("InstanceInitiatedShutdownBehavior"))
        if action in ("ModifyInstanceAttribute", "RunInstances") and behavior not in (
                None, "stop", "terminate"):
            return _Answer(*error_response(
                "InvalidParameterValue",
                f"Value ({behavior}) for parameter instanceInitiatedShutdownBehavior is"
                " invalid. Use stop or terminate."))
        if (action == "CreateSecurityGroup" and not params.get("VpcId")
                and backend.get_default_vpc() is None):
            return _Answer(*error_response("VPCIdNotSpecified", "No default VPC for this user."))
        return None

    @staticmethod
    def _translated(action: str | None, params: dict[str, str]) -> bytes | None:
        """The request rewritten into a form moto reads the way EC2 does, or None if it does.

        moto 5 takes ModifyInstanceAttribute's ``InstanceInitiatedShutdownBehavior.Value``
        for a security-group change (and empties the groups); the same change
        in the ``Attribute``/``Value`` form it applies.
        """
        value = params.get("InstanceInitiatedShutdownBehavior.Value")
        if action != "ModifyInstanceAttribute" or value is None:
            return None
        kept = {k: v for k, v in params.items()
                if k in ("Action", "Version", "InstanceId", "DryRun")}
        kept.update(Attribute="instanceInitiatedShutdownBehavior", Value=value)
        return urlencode(kept).encode()

    def _check_run_instances(self, backend: Any, params: dict[str, str]) -> _Answer | None:
        image_id = params.get("ImageId")
        if not image_id:
            if not any(k.startswith("LaunchTemplate.") for k in params):
                return _Answer(*error_response(
                    "MissingParameter", "The request must contain the parameter ImageId."))
        elif image_id not in backend.amis:
            if not _AMI_ID.fullmatch(image_id):
                return _Answer(*error_response(
                    "InvalidAMIID.Malformed", f'Invalid id: "{image_id}" (expecting "ami-...")'))
            return _Answer(*error_response(
                "InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist"))
        if "UserData" in params:
            try:
                raw = _decode_user_data(params["UserData"])
            except ValueError as exc:
                return _Answer(*error_response("InvalidParameterValue", str(exc)))
            if len(raw) > USER_DATA_LIMIT:
                return _Answer(*error_response(
                    "InvalidParameterValue", f"User data is limited to {USER_DATA_LIMIT} bytes."))
        instance_type = params.get("InstanceType")
        if image_id and instance_type:
            from moto.ec2.models.instance_types import INSTANCE_TYPES

            image_arch = backend.amis[image_id].architecture
            supported = (INSTANCE_TYPES.get(instance_type, {}).get("ProcessorInfo", {})
                         .get("SupportedArchitectures"))
            if supported and image_arch and image_arch not in supported:
                return _Answer(*error_response(
                    "InvalidParameterValue",
                    f"The architecture '{'/'.join(supported)}' of the specified instance type"
                    f" does not match the architecture '{image_arch}' of the specified AMI."))
        return None

    def _forward(self, environ: dict[str, Any], body: bytes) -> _Answer:
        """moto's answer to the request (hold the moto lock)."""
        environ = dict(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["HTTP_X_MOTO_ACCOUNT_ID"] = self.account_id
        return self._call_moto(environ)

    def _call_moto(self, environ: dict[str, Any]) -> _Answer:
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            captured["status"], captured["headers"] = int(status.split()[0]), headers

        chunks = _moto_app()(environ, start_response)
        try:
            out = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return _Answer(captured["status"], out, list(captured["headers"]))

    def _moto_request(self, region: str, params: dict[str, str]) -> _Answer:
        """An EC2 request of our own straight to moto, as this bed (hold the moto lock)."""
        from werkzeug.test import EnvironBuilder

        scope = f"{self.access_key}/20000101/{region}/ec2/aws4_request"
        builder = EnvironBuilder(
            path="/", method="POST", data=urlencode(params),
            content_type="application/x-www-form-urlencoded; charset=utf-8",
            headers={"Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, "
                                      "SignedHeaders=host, Signature=0",
                     "X-Moto-Account-Id": self.account_id})
        try:
            return self._call_moto(builder.get_environ())
        finally:
            builder.close()

    # -- twins ----------------------------------------------------------------------------

    def _run_instances(self, environ: dict[str, Any], body: bytes, params: dict[str, str],
                       region: str) -> _Answer:
        """RunInstances with a twin per new instance, whose addresses replace moto's."""
        assert self.twins is not None
        user_data = (_user_data_text(_decode_user_data(params["UserData"]))
                     if params.get("UserData") else None)
        with self._moto_lock:
            answer = self._forward(environ, body)
            if answer.status != 200:
                return answer
            backend = self._backend(region)
            reservation = backend.reservations[_xml_text(answer.body, "reservationId")]
            instances = list(reservation.instances)
            with ThreadPoolExecutor(max_workers=len(instances)) as pool:
                futures = {i.id: pool.submit(self.twins.create, i.id, user_data)
                           for i in instances}
            failures = {iid: f.exception() for iid, f in futures.items() if f.exception()}
            if failures:
                return self._launch_failed(instances, futures, failures)
            for instance in instances:
                twin = futures[instance.id].result()
                self._twins_by_id[instance.id] = twin
                self._give_addresses(instance, twin)
            return self._rerender_run(answer, region, [i.id for i in instances],
                                      params.get("Version", "2016-11-15"))

    def _launch_failed(self, instances: list[Any], futures: dict[str, Any],
                       failures: dict[str, BaseException]) -> _Answer:
        """A twin did not boot: the launch fails as an EC2 internal error, nothing left running."""
        from moto.ec2.models.instances import StateReason

        for instance in instances:
            future = futures[instance.id]
            if not future.exception():
                future.result().terminate()
            instance.terminate()
            instance.state_reason = StateReason("Server.InternalError: Internal error on launch",
                                                "Server.InternalError")
        detail = "; ".join(f"{iid}: {exc!r}" for iid, exc in failures.items())
        self.errors.append(f"RunInstances: twins failed to boot: {detail}")
        return _Answer(*error_response("InternalError",
                                       f"An internal error has occurred (node twin: {detail})"))

    def _give_addresses(self, instance: Any, twin: Twin) -> None:
        """Write the twin's addresses into moto's objects for ``instance`` (hold the moto lock).

        The public address is set only where moto gave the instance one (its
        subnet or request asked for it) and cleared otherwise.
        """
        from moto.ec2.utils import generate_dns_from_ip

        nic = instance.nics[0]
        old = nic.private_ip_address
        if old != twin.private_ip:
            nic.subnet.del_subnet_ip(old)
            instance._private_ips.discard(old)
            nic.private_ip_address = twin.private_ip
            dns = generate_dns_from_ip(twin.private_ip)
            if hasattr(nic, "private_dns_name"):
                nic.private_dns_name = dns
            for entry in nic.private_ip_addresses:
                if entry.get("PrivateIpAddress") == old:
                    entry["PrivateIpAddress"] = twin.private_ip
                    if "PrivateDnsName" in entry:
                        entry["PrivateDnsName"] = dns
        nic.public_ip = twin.public_ip if nic.public_ip else None

    def _rerender_run(self, answer: _Answer, region: str, instance_ids: list[str],
                      version: str) -> _Answer:
        """RunInstances' answer with each instance as moto now describes it, state pending.

        moto rendered the answer before the twins' addresses were written;
        DescribeInstances renders the same Instance shape from the updated
        objects, so its items replace the stale ones.
        """
        query = {"Action": "DescribeInstances", "Version": version}
        query.update({f"InstanceId.{n}": iid for n, iid in enumerate(instance_ids, 1)})
        described = self._moto_request(region, query)
        fresh = {}
        for element in ET.fromstring(described.body).iter():
            if _local(element.tag) == "instancesSet":
                for item in element:
                    fresh[_child_text(item, "instanceId")] = item
        root = ET.fromstring(answer.body)
        for element in root.iter():
            if _local(element.tag) != "instancesSet":
                continue
            for index, item in enumerate(list(element)):
                new = fresh[_child_text(item, "instanceId")]
                for state in new:
                    if _local(state.tag) == "instanceState":
                        for part in state:
                            part.text = {"code": "0", "name": "pending"}.get(_local(part.tag),
                                                                             part.text)
                element.remove(item)
                element.insert(index, new)
        out = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return _Answer(answer.status, out, answer.headers)

    def _instance_action(self, environ: dict[str, Any], body: bytes, params: dict[str, str],
                         action: str, region: str) -> _Answer:
        """Stop/Start/TerminateInstances: moto first, then the twins."""
        from moto.ec2.models.instances import StateReason

        with self._moto_lock:
            answer = self._forward(environ, body)
            if answer.status != 200:
                return answer
            backend = self._backend(region)
            for instance_id in _indexed(params, "InstanceId"):
                twin = self._twins_by_id.get(instance_id)
                if twin is None:
                    continue
                instance = backend.get_instance(instance_id)
                if action == "StopInstances" and twin.state == "running":
                    twin.stop()
                elif action == "TerminateInstances" and twin.state != "terminated":
                    twin.terminate()
                elif action == "StartInstances":
                    try:
                        if twin.state != "running":
                            twin.start()
                    except Exception as exc:
                        self.errors.append(f"StartInstances: twin {instance_id}: {exc!r}")
                        instance.stop()
                        instance.state_reason = StateReason(
                            "Server.InternalError: Internal error on launch",
                            "Server.InternalError")
                        continue
                    self._give_addresses(instance, twin)
            return answer

    def _shutdown_worker(self) -> None:
        while True:
            with self._shutdowns_cv:
                while not self._shutdowns and not self._closing:
                    self._shutdowns_cv.wait()
                if self._closing and not self._shutdowns:
                    return
                instance_id = self._shutdowns.pop(0)
                self._shutdown_busy = True
            try:
                self._apply_shutdown(instance_id)
            except Exception as exc:
                log.exception("instance-initiated shutdown of %s failed", instance_id)
                self.errors.append(f"shutdown of {instance_id}: {exc!r}")
            finally:
                with self._shutdowns_cv:
                    self._shutdown_busy = False
                    self._shutdowns_cv.notify_all()

    def _apply_shutdown(self, instance_id: str) -> None:
        from moto.ec2.models.instances import StateReason

        with self._moto_lock:
            try:
                instance = self._find_instance(instance_id)
            except KeyError:
                return  # a twin of another bed, or of an instance whose bed is closing
            if instance.state not in ("pending", "running"):
                return
            twin = self._twins_by_id.get(instance_id)
            if instance.instance_initiated_shutdown_behavior == "terminate":
                instance.terminate()
                if twin is not None and twin.state != "terminated":
                    twin.terminate()
            else:
                instance.stop()
            instance.state_reason = StateReason(
                "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                "Client.InstanceInitiatedShutdown")


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return child.text
    return None


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S GMT")

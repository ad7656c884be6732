"""Google Cloud Storage as a skyk store: ``gs://BUCKET[/PREFIX]`` through google-cloud-storage.

The store uses the credentials and project the rest of the plugin finds
(:mod:`skyk_gcp.session`), and the endpoint google-cloud-storage picks: GCS,
or the emulator that ``STORAGE_EMULATOR_HOST`` (the SDK's documented
variable) names. Nodes reach the same endpoint with rclone's ``google cloud
storage`` backend and the same service-account key (:meth:`GCSStore.node_access`).

This module is imported with the plugin, so it must not import a Google SDK:
every verb imports it when it runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from skyk.errors import SkykError, printable
from skyk.provision.cloud import CredentialCheck
from skyk.storage.store import BucketRef, NodeAccess, Store, StoreError

#: the label every bucket skyk creates carries, so ``gcloud storage buckets list`` finds them
MANAGED_LABEL = ("skyk-managed", "true")
#: google-cloud-storage's variable naming an emulator (``host:port`` or ``http://host:port``)
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: objects deleted per batch request (GCS takes at most 100 calls in a batch)
DELETE_BATCH = 100
#: files uploaded at once
UPLOAD_WORKERS = 8
#: seconds the SDK may spend retrying a call (its default, 120, hides an endpoint that is down)
RETRY_TIMEOUT = 20.0

_SCHEME = "gs://"
_NAME_CHARS = re.compile(r"[a-z0-9._-]+")
# GCS refuses "google" in a name, and close misspellings of it ("g00gle").
_GOOGLE = re.compile(r"g[o0][o0]g[l1]e")


class GCSStore(Store):
    """Google Cloud Storage buckets, named ``gs://BUCKET[/PREFIX]``."""

    name = "gcs"
    cloud = "gcp"
    display_name = "GCS"

    # -- names (no network) -------------------------------------------------------------------

    def parse_url(self, url: str) -> BucketRef | None:
        """Return the bucket and prefix of ``gs://BUCKET[/PREFIX]`` (scheme in any case), else None.

        Empty segments and slashes around the prefix are dropped: ``gs://b//d/``
        names prefix ``d`` of bucket ``b``.
        """
        if not url[:len(_SCHEME)].lower() == _SCHEME:
            return None
        bucket, _, rest = url[len(_SCHEME):].partition("/")
        return BucketRef(self.name, bucket, "/".join(part for part in rest.split("/") if part))

    def url(self, ref: BucketRef) -> str:
        """Return ``gs://BUCKET[/PREFIX]``."""
        return f"{_SCHEME}{ref.path}"

    def check_name(self, bucket: str) -> str | None:
        """Return why ``bucket`` breaks GCS's bucket naming rules, or None."""
        if not bucket:
            return "a GCS bucket needs a name"
        limit = 222 if "." in bucket else 63
        if not 3 <= len(bucket) <= limit:
            return f"GCS bucket names have 3 to {limit} characters; {bucket!r} has {len(bucket)}"
        if not _NAME_CHARS.fullmatch(bucket):
            return (f"GCS bucket names hold only lowercase letters, digits, '-', '_' and '.':"
                    f" {bucket!r}")
        if not (bucket[0].isalnum() and bucket[-1].isalnum()):
            return f"GCS bucket names start and end with a letter or digit: {bucket!r}"
        if any(len(part) > 63 for part in bucket.split(".")):
            return f"each dot-separated part of a GCS bucket name has at most 63 characters: {bucket!r}"
        if bucket.startswith("goog") or _GOOGLE.search(bucket):
            return f"GCS bucket names cannot start with 'goog' or contain 'google': {bucket!r}"
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(bucket)
            return f"a GCS bucket name cannot be an IP address: {bucket!r}"
        return None

    def check_credentials(self) -> CredentialCheck:
        """The GCP plugin's own check: a credentials file and a project, read offline."""
        from skyk_gcp.cloud import GCPCloud

        return GCPCloud().check_credentials()

    # -- verbs ------------------------------------------------------------------------------

    def exists(self, bucket: str) -> bool:
        """Return whether ``bucket`` exists; a bucket these credentials may not read is an error."""
        with _errors("look up", bucket):
            return _client().bucket(bucket).exists(retry=_retry())

    def create(self, bucket: str, region: str | None) -> None:
        """Create ``bucket`` in location ``region`` (GCS's default, US, if None), labelled as skyk's.

        Uniform bucket-level access is on, as Google recommends: access is
        granted by IAM alone, never by object ACLs.
        """
        with _errors("create", bucket):
            client = _client()
            new = client.bucket(bucket)
            new.labels = dict([MANAGED_LABEL])
            new.iam_configuration.uniform_bucket_level_access_enabled = True
            client.create_bucket(new, location=region)

    def delete(self, bucket: str) -> None:
        """Delete every object of ``bucket`` (in batches), then the bucket; gone already is fine."""
        from google.api_core import exceptions as api

        with _errors("delete", bucket), contextlib.suppress(api.NotFound):
            client = _client()
            blobs = list(client.list_blobs(bucket, retry=_retry()))
            for start in range(0, len(blobs), DELETE_BATCH):
                # An object deleted meanwhile (404) must not stop the bucket's deletion.
                with client.batch(raise_exception=False):
                    for blob in blobs[start:start + DELETE_BATCH]:
                        blob.delete()
            client.bucket(bucket).delete(retry=_retry())

    def upload(self, source: Path, dest: BucketRef) -> None:
        """Copy a file to ``PREFIX/NAME``, or a directory's files to ``PREFIX/RELATIVE/PATH``."""
        from google.cloud.storage import transfer_manager

        source = Path(source)
        if source.is_dir():
            pairs = [(path, path.relative_to(source).as_posix())
                     for path in sorted(source.rglob("*")) if path.is_file()]
        elif source.is_file():
            pairs = [(source, source.name)]
        else:
            raise StoreError(f"cannot upload {source}: no such file or directory", code="ENOENT")
        with _errors("upload to", dest.bucket):
            target = _client().bucket(dest.bucket)
            jobs = [(str(path), target.blob(_key(dest, name))) for path, name in pairs]
            transfer_manager.upload_many(jobs, max_workers=UPLOAD_WORKERS,
                                         worker_type=transfer_manager.THREAD, raise_exception=True)

    def list_objects(self, ref: BucketRef) -> list[str]:
        """Return the object names under ``ref``'s prefix, relative to it, sorted."""
        prefix = f"{ref.prefix}/" if ref.prefix else ""
        with _errors("list", ref.bucket):
            blobs = _client().list_blobs(ref.bucket, prefix=prefix, retry=_retry())
            names = [blob.name[len(prefix):] for blob in blobs]
        # Zero-byte "folder" placeholders (NAME/) that consoles create are not files.
        return sorted(name for name in names if name and not name.endswith("/"))

    def read_object(self, ref: BucketRef, key: str) -> bytes:
        """Return the contents of ``PREFIX/KEY``."""
        name = _key(ref, key)
        with _errors("read", f"{ref.bucket}/{name}"):
            return _client().bucket(ref.bucket).blob(name).download_as_bytes(retry=_retry())

    def node_access(self, bucket: str) -> NodeAccess:
        """rclone's ``google cloud storage`` remote with the service-account key skyk uses.

        The key goes to the node as the file ``key.json`` (mode 0600); the
        remote names the project, and the emulator's endpoint when
        ``STORAGE_EMULATOR_HOST`` points the SDK at one. No variable is set
        for rclone. The key reaches every bucket the account may; the bucket
        does not narrow it.
        """
        from skyk_gcp.cloud import _credentials_file, configured_project

        path = _credentials_file()
        try:
            content = path.read_bytes() if path else b""
            info = json.loads(content) if content else {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the GCP credentials file {path}: {exc}", code="credentials",
                             hint="set GOOGLE_APPLICATION_CREDENTIALS to a service-account key") from exc
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise StoreError("nodes reach GCS with a service-account key, and the GCP credentials"
                             " are not one", code="credentials",
                             hint="set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file")
        project = configured_project(info.get("project_id"))
        if not project:
            raise StoreError("no GCP project chosen", code="credentials",
                             hint="set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'")
        remote = {"type": "google cloud storage", "service_account_file": "{files}/key.json",
                  # rclone's project_number takes the project's ID as well as its number.
                  "project_number": project,
                  # Skyk's buckets use uniform bucket-level access: rclone must not set ACLs.
                  "bucket_policy_only": "true"}
        endpoint = emulator_endpoint()
        if endpoint:
            remote["endpoint"] = f"{endpoint}/storage/v1/"
        return NodeAccess(remote=remote, files={"key.json": content})


def emulator_endpoint() -> str | None:
    """``scheme://host:port`` of the emulator ``STORAGE_EMULATOR_HOST`` names (http if no scheme), or None."""
    host = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def _key(ref: BucketRef, name: str) -> str:
    return f"{ref.prefix}/{name}" if ref.prefix else name


def _client():
    """A google-cloud-storage client with skyk's GCP credentials and project."""
    from google.cloud import storage

    from skyk_gcp import session

    creds, project = session.credentials()
    return storage.Client(project=project, credentials=creds)


def _retry():
    """The SDK's retry policy for idempotent calls, bounded by :data:`RETRY_TIMEOUT`."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT)


@contextlib.contextmanager
def _errors(action: str, what: str) -> Iterator[None]:
    """Turn what the SDK raises into one :class:`StoreError` line with GCS's code and a hint."""
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as api

    from skyk_gcp import errors

    try:
        yield
    except StoreError:
        raise
    except api.GoogleAPICallError as exc:
        raise _api_error(exc, action, what) from exc
    except api.RetryError as exc:
        # Retries ran out: the last error decides (an endpoint down, most often).
        last = exc.cause
        if isinstance(last, api.GoogleAPICallError):
            raise _api_error(last, action, what) from exc
        raise _unreachable(action, what) from exc
    except google.auth.exceptions.DefaultCredentialsError as exc:
        text = printable(" ".join(str(exc).split()), errors.REASON_LIMIT)
        raise StoreError(f"no usable GCP credentials to {action} gs://{what}: {text}",
                         code="credentials", hint=errors.CREDENTIALS_HINT) from exc
    except google.auth.exceptions.GoogleAuthError as exc:
        # A refusal carries the token endpoint's answer: its code (invalid_grant) and description.
        answer = next((a for a in exc.args[1:] if isinstance(a, dict)), {})
        code = answer.get("error") or type(exc).__name__
        text = printable(" ".join(str(exc.args[0] if exc.args else exc).split()), errors.REASON_LIMIT)
        raise StoreError(f"GCP credentials refused while trying to {action} gs://{what}: {text}",
                         code=code, hint=errors.CREDENTIALS_HINT) from exc
    except SkykError as exc:
        raise StoreError(str(exc), code="credentials", hint=exc.hint) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise _unreachable(action, what) from exc


def _unreachable(action: str, what: str) -> StoreError:
    where = emulator_endpoint() or "storage.googleapis.com"
    return StoreError(f"GCS did not answer at {where} while trying to {action} gs://{what}",
                      code="unreachable", hint=f"check the network, or {EMULATOR_ENV} if it is set")


def _api_error(exc, action: str, what: str) -> StoreError:
    """The StoreError of an HTTP error GCS answered."""
    from skyk_gcp import errors

    status = errors.http_status(exc)
    # GCS names a reason (notFound, forbidden, conflict...) in its error body; its status otherwise.
    reasons = [e.get("reason") for e in exc.errors or () if isinstance(e, dict) and e.get("reason")]
    code = reasons[0] if reasons else str(status)
    if status == 404:
        return StoreError(f"gs://{what} does not exist (GCS {code})", code=code,
                          hint="check the name with 'gcloud storage ls gs://BUCKET'")
    if status in (401, 403):
        return StoreError(f"GCS refused to {action} gs://{what} ({code}): access denied", code=code,
                          hint="the account needs Cloud Storage permissions on it (roles/storage.admin"
                               " to create and delete buckets, roles/storage.objectAdmin to mount one)")
    if status == 409 and action == "create":
        return StoreError(f"the GCS bucket name {what!r} is taken ({code})", code=code,
                          hint="bucket names are global across all of GCS: choose another name")
    return StoreError(f"GCS could not {action} gs://{what}: {errors.reason(exc)}", code=code)

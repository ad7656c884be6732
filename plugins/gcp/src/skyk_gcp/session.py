"""Compute Engine clients: credentials, project and endpoint found the way Google's tools find them.

Credentials come from ``google.auth.default()`` (``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's application-default credentials, the metadata server) with the
``cloud-platform`` scope. The project is ``GOOGLE_CLOUD_PROJECT`` or
``CLOUDSDK_CORE_PROJECT``, else the credentials file's, else gcloud's
configuration (:func:`skyk_gcp.cloud.configured_project`). The endpoint is
Google's, unless gcloud's documented override
``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`` (``https://HOST/compute/v1/``)
names another. Clients use the REST transport and make no retries of their
own: :func:`skyk_gcp.errors.call` retries the few errors worth it.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

from skyk.errors import SkykError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ENDPOINT_ENV = "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"
#: the variables that decide which account, project and endpoint a client talks to
_SETTINGS = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT",
             "CLOUDSDK_CONFIG", ENDPOINT_ENV)

_lock = threading.Lock()
_clients: dict[tuple, object] = {}
_credentials: dict[tuple, tuple] = {}


def account_key() -> tuple:
    """What tells accounts (and endpoints) apart within this process: a change makes fresh clients."""
    return tuple(os.environ.get(name) for name in _SETTINGS)


def api_endpoint() -> str | None:
    """The Compute endpoint's ``scheme://host[:port]`` from gcloud's override, or None (Google's)."""
    override = os.environ.get(ENDPOINT_ENV, "").strip()
    if not override:
        return None
    parts = urlsplit(override)
    if not parts.scheme or not parts.netloc:
        raise SkykError(f"{ENDPOINT_ENV}={override!r} is not a URL",
                        hint="set it like https://compute.googleapis.com/compute/v1/, or unset it")
    return f"{parts.scheme}://{parts.netloc}"


def credentials():
    """Return (credentials, project) for this account (cached; the first call reads the files)."""
    key = account_key()
    with _lock:
        found = _credentials.get(key)
        if found is None:
            import google.auth

            from skyk_gcp.cloud import configured_project

            creds, file_project = google.auth.default(scopes=list(SCOPES))
            project = configured_project(file_project)
            if not project:
                raise SkykError("no GCP project chosen",
                                hint="set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'")
            found = _credentials[key] = (creds, project)
    return found


def project() -> str:
    """The project skyk works in."""
    return credentials()[1]


def client(kind: str):
    """Return the ``google.cloud.compute_v1`` client ``kind`` (``InstancesClient``...), shared by threads."""
    key = (account_key(), kind)
    found = _clients.get(key)
    if found is not None:
        return found
    creds, _ = credentials()
    with _lock:
        found = _clients.get(key)
        if found is None:
            from google.cloud import compute_v1

            endpoint = api_endpoint()
            options = {"api_endpoint": endpoint} if endpoint else None
            found = _clients[key] = getattr(compute_v1, kind)(
                credentials=creds, transport="rest", client_options=options)
    return found

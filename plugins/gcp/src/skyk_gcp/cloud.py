"""The GCP cloud: application-default credentials, read from local files."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

from skyk.provision.cloud import Cloud, CredentialCheck

NAME = "gcp"


def _gcloud_dir() -> Path:
    return Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud").expanduser()


def _credentials_file() -> Path | None:
    configured = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if configured:
        return Path(configured).expanduser()
    default = _gcloud_dir() / "application_default_credentials.json"
    return default if default.exists() else None


def _gcloud_project() -> str | None:
    config = configparser.ConfigParser()
    name = "default"
    active = _gcloud_dir() / "active_config"
    if active.exists():
        name = active.read_text().strip() or name
    config.read(_gcloud_dir() / "configurations" / f"config_{name}")
    return config.get("core", "project", fallback=None)


def _validate(info: object) -> str | None:
    """Check a credentials file's content offline; return the project it names, if any.

    Raises ValueError when google-auth would refuse it.
    """
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    if not isinstance(info, dict):
        raise ValueError("not a JSON object")
    kind = info.get("type")
    if kind == "service_account":
        service_account.Credentials.from_service_account_info(info)
    elif kind == "authorized_user":
        user_credentials.Credentials.from_authorized_user_info(info)
    elif kind not in ("external_account", "impersonated_service_account"):
        raise ValueError(f"unknown credential type {kind!r}")
    return info.get("project_id") or info.get("quota_project_id")


class GCPCloud(Cloud):
    """Google Compute Engine."""

    name = NAME

    def check_credentials(self) -> CredentialCheck:
        path = _credentials_file()
        if path is None:
            return CredentialCheck(False, "no application-default credentials found",
                                   hint="run 'gcloud auth application-default login' or set"
                                   " GOOGLE_APPLICATION_CREDENTIALS to a service-account key")
        try:
            info = json.loads(path.read_text())
            file_project = _validate(info)
        except (OSError, ValueError) as exc:
            return CredentialCheck(False, f"unusable credentials file {path}: {exc}".splitlines()[0],
                                   hint="create a new key or rerun 'gcloud auth application-default login'")
        project = (os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
                   or file_project or _gcloud_project())
        if not project:
            return CredentialCheck(False, "credentials found but no project chosen",
                                   hint="set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'")
        return CredentialCheck(True, f"credentials from {path.name}, project {project}")

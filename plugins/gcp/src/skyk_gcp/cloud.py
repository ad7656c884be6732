"""The GCP cloud: application-default credentials, read from local files."""

from __future__ import annotations

import configparser
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


class GCPCloud(Cloud):
    """Google Compute Engine."""

    name = NAME

    def check_credentials(self) -> CredentialCheck:
        path = _credentials_file()
        if path is None:
            return CredentialCheck(False, "no application-default credentials found",
                                   hint="run 'gcloud auth application-default login' or set"
                                   " GOOGLE_APPLICATION_CREDENTIALS to a service-account key")
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            # Parses and validates the file; no token is fetched.
            _, file_project = google.auth.load_credentials_from_file(str(path))
        except DefaultCredentialsError as exc:
            return CredentialCheck(False, f"unusable credentials file {path}: {exc}".splitlines()[0],
                                   hint="create a new key or rerun 'gcloud auth application-default login'")
        project = (os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
                   or file_project or _gcloud_project())
        if not project:
            return CredentialCheck(False, "credentials found but no project chosen",
                                   hint="set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'")
        return CredentialCheck(True, f"credentials from {path.name}, project {project}")

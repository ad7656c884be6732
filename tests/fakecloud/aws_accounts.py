"""What the AWS test beds (FakeEC2, FakeS3) share: a moto account each, and an SDK environment.

Each bed keeps its resources in a moto account of its own, dropped from every
moto backend when the bed starts and closes (:func:`drop_moto_account`), and
gives code under test the variables that point the AWS SDKs at it with
nothing of the user's (:func:`sdk_env`, over :func:`empty_config_dir`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def drop_moto_account(account_id: str) -> None:
    """Remove ``account_id`` from every moto backend (of every service), so it starts (or ends) empty."""
    from moto.core.base_backend import BackendDict, backend_lock

    with backend_lock:
        for backends in list(BackendDict._instances):
            if account_id in backends.keys():
                del backends[account_id]


def empty_config_dir(prefix: str) -> Path:
    """A new directory holding an empty AWS ``config`` and ``credentials`` file (the caller removes it)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    for name in ("config", "credentials"):
        (directory / name).touch()
    return directory


def sdk_env(config_dir: Path, access_key: str, secret_key: str, region: str) -> dict[str, str]:
    """The bed's credentials and region, the empty files of ``config_dir``, no instance-metadata lookups.

    Add the service's endpoint (``AWS_ENDPOINT_URL_EC2``, ``AWS_ENDPOINT_URL_S3``).
    """
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": str(config_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }

"""AWS clients: one boto3 session per process, one client per service and region.

Clients come from boto3's standard configuration chain, so whatever a user set
up for the AWS CLI works unchanged: profiles, ``AWS_*`` variables (credentials,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL_EC2``, ``AWS_ENDPOINT_URL_S3``), the shared
config and credentials files. For EC2, botocore's own retries are off and its
timeouts short: a capacity error must reach failover at once, not after a
minute of backing off, and the few errors worth retrying are retried, a
bounded number of times, by :func:`skyk_aws.errors.call`. S3 keeps botocore's
standard retries: its transfers are worth retrying in place.
"""

from __future__ import annotations

import os
import threading

#: seconds to open a connection to an AWS endpoint, and to wait for an answer
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0

_lock = threading.Lock()
_sessions: dict[tuple, object] = {}
_clients: dict[tuple, object] = {}


def account_key() -> tuple:
    """What tells AWS accounts (and endpoints) apart within this process.

    boto3 reads its configuration from ``AWS_*`` variables and the files they
    name, once per session; a process whose variables change (a test pointing
    at another endpoint, say) gets a fresh session and fresh caches.
    """
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def ec2(region: str):
    """Return the EC2 client for ``region`` (made on first use, then shared by threads)."""
    return _client("ec2", region, retries={"total_max_attempts": 1})


def s3(region: str | None = None):
    """Return the S3 client for ``region`` (the configured region where None), shared by threads."""
    return _client("s3", region, retries={"mode": "standard"})


def _client(service: str, region: str | None, retries: dict):
    key = (account_key(), service, region)
    client = _clients.get(key)
    if client is not None:
        return client
    # boto3 sessions are not safe to build clients from in several threads at once.
    with _lock:
        client = _clients.get(key)
        if client is None:
            from botocore.config import Config

            session = _session(key[0])
            config = Config(retries=retries, connect_timeout=CONNECT_TIMEOUT,
                            read_timeout=READ_TIMEOUT, user_agent_extra="skyk")
            client = _clients[key] = session.client(service, region_name=region, config=config)
    return client


def credentials():
    """Return the session's credentials, frozen (``access_key``, ``secret_key``, ``token``), or None.

    Resolving them may use the network where the configuration says so (an
    instance role, SSO, assume-role), as every AWS client would.
    """
    with _lock:
        session = _session(account_key())
    found = session.get_credentials()
    return found.get_frozen_credentials() if found is not None else None


def _session(key: tuple):
    # Callers hold _lock.
    import boto3.session

    session = _sessions.get(key)
    if session is None:
        session = _sessions[key] = boto3.session.Session()
    return session

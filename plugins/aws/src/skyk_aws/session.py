"""EC2 clients: one boto3 session per process, one client per region.

Clients come from boto3's standard configuration chain, so whatever a user set
up for the AWS CLI works unchanged: profiles, ``AWS_*`` variables (credentials,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL_EC2``), the shared config and credentials
files. botocore's own retries are off and its timeouts short: a capacity error
must reach failover at once, not after a minute of backing off, and the few
errors worth retrying are retried, a bounded number of times, by
:func:`skyk_aws.errors.call`.
"""

from __future__ import annotations

import os
import threading

#: seconds to open a connection to EC2's endpoint, and to wait for an answer
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
    key = (account_key(), region)
    client = _clients.get(key)
    if client is not None:
        return client
    # boto3 sessions are not safe to build clients from in several threads at once.
    with _lock:
        client = _clients.get(key)
        if client is None:
            import boto3.session
            from botocore.config import Config

            session = _sessions.get(key[0])
            if session is None:
                session = _sessions[key[0]] = boto3.session.Session()
            config = Config(retries={"total_max_attempts": 1}, connect_timeout=CONNECT_TIMEOUT,
                            read_timeout=READ_TIMEOUT, user_agent_extra="skyk")
            client = _clients[key] = session.client("ec2", region_name=region, config=config)
    return client

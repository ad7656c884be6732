"""Who skyk is in Azure and the ARM clients it talks through, one set per process.

The credential is azure-identity's: a service principal from
``AZURE_TENANT_ID``/``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET``, or else
``DefaultAzureCredential`` (certificates, workload identity, ``az login``...).
The authority is azure-identity's too (``AZURE_AUTHORITY_HOST``, Azure's public
cloud by default). An authority that is not one of Azure's own clouds (Azure
Stack Hub, a private cloud) cannot be checked against Azure's instance
discovery, so discovery is off for it.

ARM's base URL comes from ``AZURE_RESOURCE_MANAGER_ENDPOINT`` (default
``https://management.azure.com``), and tokens are asked for its
``/.default`` scope. The CA bundle is the HTTP library's usual one
(``REQUESTS_CA_BUNDLE``). The clients' own retries are off and their timeouts
short: a capacity error must reach failover at once, and the few errors worth
retrying are retried, a bounded number of times, by :func:`skyk_azure.errors.call`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from skyk.provision.types import ProvisionError

ENDPOINT_ENV = "AZURE_RESOURCE_MANAGER_ENDPOINT"
DEFAULT_ENDPOINT = "https://management.azure.com"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
#: Azure's own clouds' authorities (public, China, US Government; Germany closed but known).
AZURE_AUTHORITIES = frozenset({"login.microsoftonline.com", "login.chinacloudapi.cn",
                               "login.microsoftonline.us", "login.microsoftonline.de"})
#: longest wait between polls of a long-running operation when ARM gives no Retry-After
POLLING_INTERVAL = 2.0
#: first wait between such polls; it doubles up to POLLING_INTERVAL (see :func:`polling`)
FIRST_POLL = 0.25
#: seconds to open a connection to ARM, and to wait for an answer
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

@dataclass(frozen=True)
class Clients:
    """The three ARM clients skyk uses, for one subscription."""

    subscription_id: str
    credential: Any
    resource: Any
    network: Any
    compute: Any


def endpoint() -> str:
    """ARM's base URL, without a trailing slash."""
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def subscription_id() -> str:
    """``AZURE_SUBSCRIPTION_ID``, or the default subscription of ``az login``."""
    from skyk_azure.cloud import cli_subscription

    found = os.environ.get("AZURE_SUBSCRIPTION_ID") or cli_subscription()
    if not found:
        raise ProvisionError("credentials", "cloud", "no Azure subscription chosen: set"
                             " AZURE_SUBSCRIPTION_ID or run 'az account set'")
    return found


def private_authority() -> bool:
    """Whether ``AZURE_AUTHORITY_HOST`` names an authority outside Azure's own clouds."""
    authority = os.environ.get(AUTHORITY_ENV)
    if not authority:
        return False
    host = urlparse(authority if "://" in authority else f"https://{authority}").hostname
    return (host or "").lower() not in AZURE_AUTHORITIES


def credential():
    """The azure-identity credential the environment describes."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    options = {"disable_instance_discovery": True} if private_authority() else {}
    tenant, client, secret = (os.environ.get(v) for v in
                              ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"))
    if tenant and client and secret:
        # azure-identity reads AZURE_AUTHORITY_HOST itself.
        return ClientSecretCredential(tenant, client, secret, **options)
    return DefaultAzureCredential(**options)


def _configuration_key() -> tuple:
    """What tells subscriptions (and endpoints) apart within this process."""
    return tuple(sorted((k, v) for k, v in os.environ.items()
                        if k.startswith("AZURE_") or k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")))


def clients() -> Clients:
    """The ARM clients for the environment's subscription (made on first use, then shared)."""
    return _clients_for(_configuration_key())


@functools.lru_cache(maxsize=8)
def _clients_for(key: tuple) -> Clients:
    """Clients for one configuration (``key``); threads share them (azure-core's are thread-safe)."""
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient

    subscription = subscription_id()
    base = endpoint()
    options = {"base_url": base, "credential_scopes": [f"{base}/.default"],
               "polling_interval": POLLING_INTERVAL, "retry_total": 0,
               "connection_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
               "user_agent": "skyk"}
    shared = credential()
    return Clients(subscription, shared, ResourceManagementClient(shared, subscription, **options),
                   NetworkManagementClient(shared, subscription, **options),
                   ComputeManagementClient(shared, subscription, **options))


def polling():
    """How to poll one long-running operation: ARM's ``Retry-After`` when it gives one, else
    soon at first (0.25 s) and then less often, doubling up to :data:`POLLING_INTERVAL`.

    Creating a network resource takes ARM a moment and a VM a minute: a fixed
    interval would either add its whole length to each quick operation or poll
    a slow one needlessly often. Pass a fresh one as ``polling=`` to each ``begin_*`` call.
    """
    return _backoff_polling()()


@functools.cache
def _backoff_polling() -> type:
    from azure.core.polling.base_polling import get_retry_after
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    class BackoffPolling(ARMPolling):
        """ARM's polling with a growing interval where ARM names none."""

        def __init__(self) -> None:
            super().__init__(timeout=FIRST_POLL)
            self._next = FIRST_POLL

        def _extract_delay(self) -> float:
            given = get_retry_after(self._pipeline_response)
            if given:
                return given
            delay, self._next = self._next, min(self._next * 2, POLLING_INTERVAL)
            return delay

    return BackoffPolling


def authenticate(found: Clients) -> None:
    """Get a token for ARM now (it is cached for the calls that follow).

    Wrong credentials then fail before anything is created, with the
    authority's own reason, and there is nothing to clean up.
    """
    found.credential.get_token(f"{endpoint()}/.default")

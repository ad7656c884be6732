"""The Azure cloud: credentials from a service principal or an ``az login``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from skyk.provision.cloud import Cloud, CredentialCheck

NAME = "azure"
_PRINCIPAL = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID")
_PRINCIPAL_SECRETS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                      "AZURE_FEDERATED_TOKEN_FILE")


def _azure_config_dir() -> Path:
    return Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure").expanduser()


def _cli_subscription() -> str | None:
    """Return the default subscription id of an ``az login`` session, if any."""
    profile = _azure_config_dir() / "azureProfile.json"
    try:
        # az writes this file with a UTF-8 byte-order mark.
        data = json.loads(profile.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    for subscription in data.get("subscriptions", []) if isinstance(data, dict) else []:
        if isinstance(subscription, dict) and subscription.get("isDefault"):
            return subscription.get("id")
    return None


class AzureCloud(Cloud):
    """Microsoft Azure virtual machines."""

    name = NAME

    def check_credentials(self) -> CredentialCheck:
        subscription = os.environ.get("AZURE_SUBSCRIPTION_ID")
        if all(os.environ.get(v) for v in _PRINCIPAL):
            if not any(os.environ.get(v) for v in _PRINCIPAL_SECRETS):
                return CredentialCheck(False, "service principal has no secret or certificate",
                                       hint="set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH")
            if not subscription:
                return CredentialCheck(False, "no subscription chosen",
                                       hint="set AZURE_SUBSCRIPTION_ID")
            return CredentialCheck(True, f"service principal, subscription {subscription}")
        cli_subscription = _cli_subscription()
        if cli_subscription or (subscription and (_azure_config_dir() / "msal_token_cache.json").exists()):
            return CredentialCheck(True, f"az login, subscription {subscription or cli_subscription}")
        return CredentialCheck(False, "no Azure credentials found",
                               hint="run 'az login', or set AZURE_CLIENT_ID, AZURE_TENANT_ID,"
                               " AZURE_CLIENT_SECRET and AZURE_SUBSCRIPTION_ID")

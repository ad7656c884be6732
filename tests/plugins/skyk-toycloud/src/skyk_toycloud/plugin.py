"""The toy cloud's hooks, written only against skyk's public plugin API."""

from __future__ import annotations

import os
from pathlib import Path

from skyk.catalog.csvfile import read_offerings
from skyk.hookspecs import hookimpl
from skyk.provision.cloud import Cloud, CredentialCheck

NAME = "toy"


class ToyCloud(Cloud):
    """A cloud that sells ToyGPU machines in one region."""

    name = NAME
    default_cpus = 2
    default_memory_gib = 4

    def check_credentials(self) -> CredentialCheck:
        if os.environ.get("TOYCLOUD_TOKEN"):
            return CredentialCheck(True, "token from TOYCLOUD_TOKEN")
        return CredentialCheck(False, "no toy token", hint="export TOYCLOUD_TOKEN=anything")


@hookimpl
def skyk_clouds():
    return [ToyCloud()]


@hookimpl
def skyk_catalog_files():
    return [f"{NAME}/vms.csv"]


@hookimpl
def skyk_catalog_offerings(catalog_dir: Path):
    # Use the user's catalog when there is one, else the price list shipped
    # with the package, so the toy works against any catalog directory.
    path = catalog_dir / NAME / "vms.csv"
    if not path.exists():
        path = Path(__file__).with_name("vms.csv")
    return read_offerings(path, NAME, zone_column="AvailabilityZone")

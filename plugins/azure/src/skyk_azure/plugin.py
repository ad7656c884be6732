"""Hook implementations of the Azure plugin."""

from __future__ import annotations

from skyk.catalog.csvfile import read_offerings
from skyk.hookspecs import hookimpl

from skyk_azure.cloud import NAME, AzureCloud


@hookimpl
def skyk_clouds():
    return [AzureCloud()]


@hookimpl
def skyk_catalog_files():
    return [f"{NAME}/vms.csv", f"{NAME}/images.csv"]


@hookimpl
def skyk_catalog_offerings(catalog_dir):
    # Azure prices per region (no zone column). Its Generation column may hold
    # an unquoted "V1,V2"; it is last and unread, so the split is harmless.
    return read_offerings(catalog_dir / NAME / "vms.csv", NAME)

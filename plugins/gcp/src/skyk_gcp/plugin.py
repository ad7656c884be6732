"""Hook implementations of the GCP plugin."""

from __future__ import annotations

from skyk.hookspecs import hookimpl

from skyk_gcp.catalog import read_catalog
from skyk_gcp.cloud import NAME, GCPCloud


@hookimpl
def skyk_clouds():
    return [GCPCloud()]


@hookimpl
def skyk_catalog_files():
    return [f"{NAME}/vms.csv", f"{NAME}/images.csv"]


@hookimpl
def skyk_catalog_offerings(catalog_dir):
    return read_catalog(catalog_dir / NAME / "vms.csv")


@hookimpl
def skyk_stores():
    # Imported when a command asks for stores: listing prices or clusters never needs one.
    from skyk_gcp.store import GCSStore

    return [GCSStore()]

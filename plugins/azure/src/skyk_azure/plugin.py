"""Hook implementations of the Azure plugin."""

from __future__ import annotations

import re

from skyk.catalog.csvfile import read_offerings
from skyk.hookspecs import hookimpl

from skyk_azure.cloud import NAME, AzureCloud

#: Sizes with Arm CPUs (Ampere, Cobalt): a ``p`` among the feature letters after the
#: vCPU count, in Azure's size naming (Standard_D2ps_v5, Standard_B2pts_v2).
_ARM_SIZE = re.compile(r"^Standard_[A-Z]+\d+[a-z]*p[a-z]*(_|$)")


@hookimpl
def skyk_clouds():
    return [AzureCloud()]


@hookimpl
def skyk_stores():
    # Imported when a command asks for stores: listing prices or clusters never needs one.
    from skyk_azure.store import AzureBlobStore

    return [AzureBlobStore()]


@hookimpl
def skyk_catalog_files():
    return [f"{NAME}/vms.csv", f"{NAME}/images.csv"]


@hookimpl
def skyk_catalog_offerings(catalog_dir):
    # Azure prices per region (no zone column). Its Generation column may hold
    # an unquoted "V1,V2"; it is last and unread, so the split is harmless.
    # Arm sizes are left out: every image of the catalog's images.csv is x86-64,
    # so a node of such a size could not boot.
    return [o for o in read_offerings(catalog_dir / NAME / "vms.csv", NAME)
            if not _ARM_SIZE.match(o.instance_type)]

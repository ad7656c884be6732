"""Hook implementations of the AWS plugin."""

from __future__ import annotations

from skyk.catalog.csvfile import read_offerings
from skyk.hookspecs import hookimpl

from skyk_aws.cloud import NAME, AWSCloud


@hookimpl
def skyk_clouds():
    return [AWSCloud()]


@hookimpl
def skyk_stores():
    # Imported when a command asks for stores: listing prices or clusters never needs one.
    from skyk_aws.store import S3Store

    return [S3Store()]


@hookimpl
def skyk_catalog_files():
    return [f"{NAME}/vms.csv", f"{NAME}/images.csv"]


@hookimpl
def skyk_catalog_offerings(catalog_dir):
    # Zones are AWS zone IDs (use1-az1), which are the same for every account.
    return read_offerings(catalog_dir / NAME / "vms.csv", NAME, zone_column="AvailabilityZone")

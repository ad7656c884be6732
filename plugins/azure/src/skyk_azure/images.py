"""Which image a node boots: a marketplace image from the catalog, or the task's own.

By default the image comes from the catalog's ``azure/images.csv`` (SkyPilot's
images: Ubuntu with Python, and for GPU sizes the NVIDIA driver and CUDA): the
newest row of the tag that fits the VM size (its accelerator, and the Hyper-V
generations it boots, from ``azure/vms.csv``), for the region or for every
region (an empty Region). A task's ``image_id`` overrides it: a marketplace
URN ``publisher:offer:sku:version``, an image resource id
(``/subscriptions/.../images/...`` or a gallery image version), or a
``skypilot:`` tag looked up in the same file.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

from skyk.catalog.csvfile import read_rows
from skyk.catalog.offering import Offering
from skyk.catalog.store import catalog_dir
from skyk.provision.images import chosen_image
from skyk.provision.types import ProvisionError, ProvisionRequest

CPU_TAG = "skypilot:v1-ubuntu-2004"
GPU_TAG = "skypilot:gpu-ubuntu-2204"
#: K80s need the older driver of the Ubuntu 20.04 image.
K80_TAG = "skypilot:k80-ubuntu-2004"
IMAGES_FILE = ("azure", "images.csv")
VMS_FILE = ("azure", "vms.csv")


def generations(instance_type: str, directory: Path | None = None) -> frozenset[str]:
    """The Hyper-V generations (``V1``, ``V2``) VM size ``instance_type`` boots, per the catalog.

    The Generation column is the row's last, and holds ``V1``, ``V2`` or an
    unquoted ``V1,V2`` that spills into one more field; empty if the size is unknown.
    """
    return _generations(directory or catalog_dir()).get(instance_type, frozenset())


@functools.lru_cache(maxsize=2)
def _generations(directory: Path) -> dict[str, frozenset[str]]:
    path = directory / VMS_FILE[0] / VMS_FILE[1]
    found: dict[str, frozenset[str]] = {}
    with open(path, newline="", encoding="utf-8") as rows:
        reader = csv.reader(rows)
        column = next(reader).index("Generation")
        for row in reader:
            if row and row[0] not in found:
                found[row[0]] = frozenset(g.strip() for g in row[column:] if g.strip())
    return found


def default_tag(offering: Offering, directory: Path | None = None) -> str:
    """The catalog tag of the image for ``offering``'s VM size.

    The CPU image is a generation 1 image and the GPU one a generation 2
    image: a size that boots only one generation gets the image of that one.
    """
    if offering.accelerator == "K80":
        return K80_TAG
    booted = generations(offering.instance_type, directory)
    if booted == {"V1"}:
        return CPU_TAG
    if booted == {"V2"}:
        return GPU_TAG
    return GPU_TAG if offering.accelerator else CPU_TAG


def catalog_image(tag: str, region: str, directory: Path | None = None) -> str | None:
    """The newest image URN of ``tag`` for ``region`` in the catalog, or None."""
    path = (directory or catalog_dir()).joinpath(*IMAGES_FILE)
    rows = [(row_region == region, version, image) for row_tag, row_region, version, image
            in read_rows(path, ("Tag", "Region", "OSVersion", "ImageId"))
            if row_tag == tag and row_region in ("", region) and image]
    return max(rows)[2] if rows else None


def parse(image: str) -> dict[str, str]:
    """The ARM ``imageReference`` of an image URN or resource id; ProvisionError if neither."""
    if image.startswith("/"):
        return {"id": image}
    parts = image.split(":")
    if len(parts) != 4 or not all(parts):
        raise ProvisionError("other", "cloud", f"image_id {image}: expected a marketplace image"
                             " as publisher:offer:sku:version or an image resource id")
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))


def reference(request: ProvisionRequest) -> dict[str, str]:
    """The ``imageReference`` ``request``'s VMs boot: its own ``image_id``, or the catalog's."""
    return parse(chosen_image(request, default_tag(request.offering), catalog_image,
                              "/".join(IMAGES_FILE), "an image URN"))

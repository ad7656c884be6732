"""Which image a node boots, and what Compute Engine says about it before anything is created.

By default the image comes from the catalog's ``gcp/images.csv`` (SkyPilot's
images: Ubuntu 22.04 with Python, and for GPU machines the NVIDIA driver and
CUDA): the newest row of the tag that fits the offering. A task's
``image_id`` overrides it: an image path (``projects/P/global/images/NAME``,
or ``.../images/family/FAMILY`` for the newest of a family), or a
``skypilot:`` tag looked up in the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from skyk.catalog.csvfile import read_rows
from skyk.catalog.offering import Offering
from skyk.catalog.store import catalog_dir
from skyk.provision.types import ProvisionError, ProvisionRequest

from skyk_gcp import errors, session

CPU_TAG = "skypilot:custom-cpu-ubuntu-2204"
GPU_TAG = "skypilot:custom-gpu-ubuntu-2204"
#: Appended to the CPU tag for Arm (Axion, Ampere) machine types.
ARM_SUFFIX = "-arm64"
IMAGES_FILE = ("gcp", "images.csv")
_ARM_FAMILIES = ("t2a-", "c4a-")
_PATH = re.compile(r"(?:.*/)?projects/(?P<project>[^/]+)/global/images/"
                   r"(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))")


@dataclass(frozen=True)
class Image:
    """An image as GCE describes it: enough to build the boot disk."""

    #: what the boot disk's ``sourceImage`` names
    link: str
    #: GiB of the image, the least a boot disk may have
    size: int


def default_tag(offering: Offering) -> str:
    """The catalog tag of the image for ``offering``."""
    if offering.accelerator:
        return GPU_TAG
    return CPU_TAG + ARM_SUFFIX if offering.instance_type.startswith(_ARM_FAMILIES) else CPU_TAG


def catalog_image(tag: str, directory: Path | None = None) -> str | None:
    """The newest image path of ``tag`` in the catalog (GCP's images are global), or None."""
    path = (directory or catalog_dir()).joinpath(*IMAGES_FILE)
    rows = [(created, image) for row_tag, image, created
            in read_rows(path, ("Tag", "ImageId", "CreationDate")) if row_tag == tag and image]
    return max(rows)[1] if rows else None


def chosen_image(request: ProvisionRequest) -> str:
    """The image path ``request`` boots: its own ``image_id``, or the catalog's for its offering."""
    wanted = request.image_id
    if wanted and wanted.startswith("docker:"):
        raise ProvisionError("unsupported", "cloud", f"image_id {wanted}: the gcp plugin runs tasks"
                             " on the VM's own image, not in containers")
    if wanted and not wanted.startswith("skypilot:"):
        if not _PATH.fullmatch(wanted):
            raise ProvisionError("other", "cloud", f"image_id {wanted!r} is not a GCE image path"
                                 " (projects/PROJECT/global/images/NAME or .../images/family/FAMILY)")
        return wanted
    tag = wanted or default_tag(request.offering)
    image = catalog_image(tag)
    if image is None:
        raise ProvisionError("unsupported", "cloud", f"the catalog's {'/'.join(IMAGES_FILE)} has no"
                             f" {tag} image; set image_id to a GCE image path")
    return image


def describe(path: str, region: str) -> Image:
    """Ask GCE for image ``path``; raise a clear region-scoped error if it is not there."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise ProvisionError("other", "region", f"image {path!r} is not a GCE image path")
    images = session.client("ImagesClient")
    try:
        if match["family"]:
            found = errors.call(images.get_from_family, project=match["project"],
                                family=match["family"])
        else:
            found = errors.call(images.get, project=match["project"], image=match["name"])
    except errors.api_errors() as exc:
        if not errors.is_not_found(exc):
            raise
        raise ProvisionError("other", "region", f"image {path} does not exist, or this project may"
                             " not use it (set image_id to an image it can boot)") from None
    if found.status and found.status != "READY":
        raise ProvisionError("other", "region", f"image {path} is {found.status}, not READY")
    # A family resolves to one image: the disk boots exactly the one checked.
    link = f"projects/{match['project']}/global/images/{found.name}" if found.name else path
    return Image(link, int(found.disk_size_gb or 0))


def resolve(request: ProvisionRequest) -> Image:
    """Choose ``request``'s image and check GCE has it, before anything is created."""
    return describe(chosen_image(request), request.offering.region)

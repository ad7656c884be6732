"""Which AMI a node boots, and what EC2 says about it before anything is created.

By default the image comes from the catalog's ``aws/images.csv`` (SkyPilot's
images: Ubuntu 22.04 with Python, and for GPU types the NVIDIA driver and
CUDA): the newest row of the tag that fits the instance type in the region.
A task's ``image_id`` overrides it: an AMI ID, or a ``skypilot:`` tag looked
up in the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from skyk.catalog.csvfile import read_rows
from skyk.catalog.offering import Offering
from skyk.catalog.store import catalog_dir
from skyk.provision.images import chosen_image
from skyk.provision.types import ProvisionError, ProvisionRequest

from skyk_aws import errors

CPU_TAG = "skypilot:custom-cpu-ubuntu"
GPU_TAG = "skypilot:custom-gpu-ubuntu"
#: Inferentia and Trainium run AWS Neuron, not CUDA.
NEURON_TAG = "skypilot:neuron-ubuntu-2204"
#: Appended to a tag for Graviton (arm64) instance types.
ARM_SUFFIX = "-arm64"
IMAGES_FILE = ("aws", "images.csv")

# Graviton families put a 'g' right after the generation digit: m6g, c7gn, r6gd,
# t4g, g5g, x2gd, im4gn, is4gen, hpc7g; a1 is the first. None of the x86 families do.
_GRAVITON = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)\.")


@dataclass(frozen=True)
class Image:
    """An AMI as EC2 describes it: enough to build the launch request."""

    image_id: str
    root_device: str
    #: GiB of the root volume's snapshot, the least the root volume may have
    root_size: int | None
    architecture: str


def architecture(instance_type: str) -> str:
    """``arm64`` for Graviton instance types, ``x86_64`` for the rest."""
    return "arm64" if _GRAVITON.match(instance_type) else "x86_64"


def default_tag(offering: Offering) -> str:
    """The catalog tag of the image for ``offering``'s instance type."""
    accelerator = offering.accelerator or ""
    if accelerator.startswith(("Inferentia", "Trainium")):
        return NEURON_TAG
    tag = GPU_TAG if accelerator else CPU_TAG
    return tag + ARM_SUFFIX if architecture(offering.instance_type) == "arm64" else tag


def catalog_image(tag: str, region: str, directory: Path | None = None) -> str | None:
    """The newest AMI of ``tag`` in ``region`` in the catalog, or None."""
    path = (directory or catalog_dir()).joinpath(*IMAGES_FILE)
    rows = [(created, image) for row_tag, row_region, image, created
            in read_rows(path, ("Tag", "Region", "ImageId", "CreationDate"))
            if row_tag == tag and row_region == region and image]
    return max(rows)[1] if rows else None


def chosen_image_id(request: ProvisionRequest) -> str:
    """The AMI ID ``request`` boots: its own ``image_id``, or the catalog's for its offering."""
    return chosen_image(request, default_tag(request.offering), catalog_image, "/".join(IMAGES_FILE),
                        "an AMI")


def describe(ec2, image_id: str, region: str) -> Image:
    """Ask EC2 for ``image_id``; raise a clear region-scoped error if it is not usable."""
    from botocore.exceptions import ClientError

    try:
        found = errors.call(ec2.describe_images, ImageIds=[image_id]).get("Images", [])
    except ClientError as exc:
        if not (errors.error_code(exc) or "").startswith("InvalidAMIID."):
            raise
        found = []
    if not found:
        raise ProvisionError("other", "region", f"AMI {image_id} does not exist in {region}, or this"
                             " account may not use it (AMIs are per region: set image_id per region)")
    image = found[0]
    if image.get("State", "available") != "available":
        raise ProvisionError("other", "region", f"AMI {image_id} in {region} is {image['State']}")
    root = image.get("RootDeviceName") or "/dev/sda1"
    sizes = [m["Ebs"].get("VolumeSize") for m in image.get("BlockDeviceMappings", [])
             if m.get("DeviceName") == root and m.get("Ebs")]
    return Image(image_id, root, sizes[0] if sizes else None, image.get("Architecture", "x86_64"))


def resolve(ec2, request: ProvisionRequest) -> Image:
    """Choose ``request``'s AMI and check it fits its instance type, before anything is created."""
    offering = request.offering
    image = describe(ec2, chosen_image_id(request), offering.region)
    wanted = architecture(offering.instance_type)
    if image.architecture != wanted:
        raise ProvisionError("other", "region", f"AMI {image.image_id} is for {image.architecture},"
                             f" but {offering.instance_type} is {wanted}")
    return image

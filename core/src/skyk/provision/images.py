"""Which image a VM boots: the task's ``image_id``, or the catalog's for a ``skypilot:`` tag.

Clouds whose catalogs carry an ``images.csv`` (SkyPilot's images, named by
tags such as ``skypilot:gpu-ubuntu-2204``) share the rule: a task's own image
wins; a tag (the task's, or the cloud's default for the instance type) is
looked up in the catalog for the region; containers are not VM images.
"""

from __future__ import annotations

from collections.abc import Callable

from skyk.provision.types import ProvisionError, ProvisionRequest

TAG_PREFIX = "skypilot:"


def chosen_image(request: ProvisionRequest, default_tag: str,
                 lookup: Callable[[str, str], str | None], catalog_file: str, what: str) -> str:
    """The image ``request`` boots: its ``image_id``, or what ``lookup(tag, region)`` finds.

    ``default_tag`` is the tag for the request's instance type, ``catalog_file``
    and ``what`` (e.g. ``an AMI``) name the catalog and the cloud's images in
    the error when the catalog has none for the region.
    """
    wanted = request.image_id
    cloud = request.offering.cloud
    if wanted and wanted.startswith("docker:"):
        raise ProvisionError("unsupported", "cloud", f"image_id {wanted}: the {cloud} plugin runs tasks"
                             " on the VM's own image, not in containers")
    if wanted and not wanted.startswith(TAG_PREFIX):
        return wanted
    tag = wanted or default_tag
    region = request.offering.region
    image = lookup(tag, region)
    if image is None:
        raise ProvisionError("unsupported", "region", f"the catalog's {catalog_file} has no"
                             f" {tag} image for {region}; set image_id to {what} there")
    return image

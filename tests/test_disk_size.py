"""``resources.disk_size`` as SkyPilot's schema takes it: GB, or a size with a unit."""

from __future__ import annotations

import pytest
from skyk.spec.task import task_from_mapping


@pytest.mark.parametrize(("written", "gb"), [
    (256, 256), ("256", 256), ("1024GB", 1024), ("1TB", 1024), ("1tb", 1024), ("512Gi", 512),
    ("1Ti", 1024), ("2048MB", 2), ("1500MB", 1),  # floored to whole GB, as SkyPilot does
])
def test_disk_size_units(written, gb):
    task = task_from_mapping({"resources": {"disk_size": written}}, "t.yaml")
    assert task.resources.disk_size == gb

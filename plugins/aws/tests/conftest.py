"""A real EC2 endpoint for the AWS plugin's tests: the test bed's moto server, in this process.

The plugin is pointed at it only the way a user points the AWS CLI somewhere:
``AWS_ENDPOINT_URL_EC2``, credentials in ``AWS_*`` variables, and empty config
and credentials files (:meth:`fakecloud.FakeEC2.env`). Its catalog directory
(``SKYK_CATALOG_DIR``) holds an ``aws/images.csv`` whose AMIs the bed registers.
The bed is a moto account of its own, so other tests' moto state never leaks in.
"""

from __future__ import annotations

import pytest

#: The images.csv rows the tests launch from: (tag, AMI index, date). Two CPU rows, so the
#: newest one must win; the last is an image no default picks, for image_id overrides.
IMAGE_ROWS = (("skypilot:custom-cpu-ubuntu", 0, "20240101"), ("skypilot:custom-cpu-ubuntu", 1, "20250101"),
              ("skypilot:custom-gpu-ubuntu", 2, "20250101"), ("skypilot:neuron-ubuntu-2204", 3, "20250101"),
              ("skypilot:gpu-ubuntu-2004", 4, "20230101"))
REGION = "us-east-1"
#: A region with one CPU image (and so a default VPC to remove).
OTHER_REGION = "eu-west-3"


@pytest.fixture(scope="session")
def moto_images():
    """The AMI ids of the tests' catalog, in IMAGE_ROWS's index order."""
    return [f"ami-0a{index:015x}" for index in range(len(IMAGE_ROWS) + 1)]


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, moto_images):
    """A catalog directory whose aws/images.csv names the bed's AMIs."""
    directory = tmp_path_factory.mktemp("catalogs")
    (directory / "aws").mkdir()
    lines = ["Tag,Region,OS,OSVersion,ImageId,CreationDate,BaseImageId"]
    lines += [f"{tag},{REGION},ubuntu,22.04,{moto_images[index]},{date}," for tag, index, date in IMAGE_ROWS]
    lines.append(f"skypilot:custom-gpu-ubuntu,{REGION},ubuntu,22.04,,20990101,")  # no AMI: skipped
    lines.append(f"skypilot:custom-cpu-ubuntu,{OTHER_REGION},ubuntu,22.04,{moto_images[-1]},20250101,")
    (directory / "aws" / "images.csv").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="session")
def bed(catalog):
    """The test bed's EC2 (moto and our fault layer, no node twins) for the whole session."""
    from fakecloud import FakeEC2

    with FakeEC2(catalog_dir=catalog) as ec2:
        yield ec2


@pytest.fixture(scope="session")
def moto_endpoint(bed):
    """The URL of the bed's EC2 endpoint."""
    return bed.endpoint


@pytest.fixture(scope="session")
def moto_client(bed):
    """The tests' own EC2 client on REGION, to look at (and change) what moto holds."""
    return bed.client(REGION)


@pytest.fixture
def aws(monkeypatch, bed, catalog, moto_client):
    """Point the plugin at the bed as a user would; return the tests' own client (see moto_client)."""
    for key, value in {**bed.env(), "AWS_DEFAULT_REGION": REGION, "SKYK_CATALOG_DIR": str(catalog)}.items():
        monkeypatch.setenv(key, value)
    return moto_client

"""A real EC2 endpoint for the AWS plugin's tests: moto's server, in this process.

The plugin is pointed at it only the way a user points the AWS CLI somewhere:
``AWS_ENDPOINT_URL_EC2``, credentials in ``AWS_*`` variables, and empty config
and credentials files. Its catalog directory (``SKYK_CATALOG_DIR``) holds an
``aws/images.csv`` whose AMIs are images moto knows.
"""

from __future__ import annotations

import logging
import socket

import pytest

#: The images.csv rows the tests launch from: (tag, AMI index among moto's x86_64 images, date).
#: Two CPU rows, so the newest one must win.
IMAGE_ROWS = (("skypilot:custom-cpu-ubuntu", 0, "20240101"), ("skypilot:custom-cpu-ubuntu", 1, "20250101"),
              ("skypilot:custom-gpu-ubuntu", 2, "20250101"), ("skypilot:neuron-ubuntu-2204", 3, "20250101"))
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """The URL of a moto server running for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws_files(tmp_path_factory):
    """Empty AWS config and credentials files, the same for every test (so clients are reused)."""
    directory = tmp_path_factory.mktemp("aws-config")
    (directory / "config").write_text("")
    (directory / "credentials").write_text("")
    return directory


@pytest.fixture(scope="session")
def moto_client(moto_endpoint):
    """The tests' own EC2 client on REGION, to look at (and change) what moto holds."""
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client("ec2", region_name=REGION, endpoint_url=moto_endpoint)


@pytest.fixture(scope="session")
def moto_images(moto_client):
    """x86_64 AMIs moto serves in REGION (IDs), in a stable order."""
    images = moto_client.describe_images(Owners=["amazon"])["Images"]
    return sorted(i["ImageId"] for i in images
                  if i.get("Architecture") == "x86_64" and i.get("RootDeviceType") == "ebs")


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, moto_images):
    """A catalog directory whose aws/images.csv names moto's AMIs."""
    directory = tmp_path_factory.mktemp("catalogs")
    (directory / "aws").mkdir()
    lines = ["Tag,Region,OS,OSVersion,ImageId,CreationDate,BaseImageId"]
    lines += [f"{tag},{REGION},ubuntu,22.04,{moto_images[index]},{date}," for tag, index, date in IMAGE_ROWS]
    lines.append(f"skypilot:custom-gpu-ubuntu,{REGION},ubuntu,22.04,,20990101,")  # no AMI: skipped
    (directory / "aws" / "images.csv").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def aws(monkeypatch, moto_endpoint, aws_files, catalog, moto_client):
    """Point the plugin at moto as a user would; return the tests' own client (see moto_client)."""
    for key, value in {"AWS_ENDPOINT_URL_EC2": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_CONFIG_FILE": str(aws_files / "config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(aws_files / "credentials"),
                       "SKYK_CATALOG_DIR": str(catalog)}.items():
        monkeypatch.setenv(key, value)
    return moto_client

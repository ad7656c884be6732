"""skyk's fake-cloud test bed: fake clouds that tests point the real SDKs at.

``FakeEC2`` (:mod:`fakecloud.ec2`) is moto's EC2 server behind our fault,
credential, AMI and node-twin layer; ``Rule`` and ``error_response``
(:mod:`fakecloud.faults`) are its fault rules and EC2's error document.
``FakeGCE`` (:mod:`fakecloud.gcp`) is a Compute Engine v1 REST fake that
reuses the same rules and twins. ``FakeS3`` (:mod:`fakecloud.s3`) is moto's
S3 server accepting the bed's key alone. ``FakeARM`` (:mod:`fakecloud.azure`) is a
fake Azure Resource Manager of our own, with a token endpoint, served over TLS
on loopback. ``Azurite`` (:mod:`fakecloud.azurite`) is Microsoft's Azure
Storage emulator (its Blob service), started from npm. ``FakeGCS``
(:mod:`fakecloud.gcs`) runs the gcp-storage-emulator GCS emulator, with a
token endpoint for its service-account keys.
"""

from .azure import ARMCall, FakeARM
from .azurite import Azurite
from .ec2 import Call, FakeEC2
from .faults import RequestFacts, Rule, error_response, status_for
from .gcp import FakeGCE, GCECall
from .gcs import FakeGCS
from .s3 import FakeS3

__all__ = ["ARMCall", "Azurite", "Call", "FakeARM", "FakeEC2", "FakeGCE", "FakeGCS", "FakeS3", "GCECall",
           "RequestFacts", "Rule", "error_response", "status_for"]

"""skyk's fake-cloud test bed: fake clouds that tests point the real SDKs at.

``FakeEC2`` (:mod:`fakecloud.ec2`) is moto's EC2 server behind our fault,
credential, AMI and node-twin layer; ``Rule`` and ``error_response``
(:mod:`fakecloud.faults`) are its fault rules and EC2's error document.
``FakeARM`` (:mod:`fakecloud.azure`) is a fake Azure Resource Manager of our
own, with a token endpoint, served over TLS on loopback.
"""

from .azure import ARMCall, FakeARM
from .ec2 import Call, FakeEC2
from .faults import RequestFacts, Rule, error_response, status_for

__all__ = ["ARMCall", "Call", "FakeARM", "FakeEC2", "RequestFacts", "Rule", "error_response", "status_for"]

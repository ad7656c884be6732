"""How EC2's errors steer failover, and the bounded retries: botocore errors built as EC2 sends them."""

from __future__ import annotations

import pytest
from botocore import exceptions as boto_errors
from skyk.errors import SkykError
from skyk_aws import errors, security_groups


def client_error(code: str, message: str = "something happened", operation: str = "RunInstances",
                 status: int = 400) -> boto_errors.ClientError:
    """A ClientError as botocore parses EC2's error XML (Response/Errors/Error)."""
    return boto_errors.ClientError({"Error": {"Code": code, "Message": message},
                                    "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize(("code", "kind", "scope"), [
    ("InsufficientInstanceCapacity", "capacity", "zone"),
    ("InsufficientCapacity", "capacity", "zone"),
    ("InsufficientHostCapacity", "capacity", "zone"),
    ("InsufficientReservedInstanceCapacity", "capacity", "zone"),
    ("InsufficientFreeAddressesInSubnet", "capacity", "zone"),
    ("UnfulfillableCapacity", "capacity", "zone"),
    ("SpotMaxPriceTooLow", "capacity", "zone"),
    ("Unsupported", "capacity", "zone"),
    ("VcpuLimitExceeded", "quota", "region"),
    ("InstanceLimitExceeded", "quota", "region"),
    ("MaxSpotInstanceCountExceeded", "quota", "region"),
    ("PendingVerification", "quota", "region"),
    ("VolumeLimitExceeded", "quota", "region"),
    ("OptInRequired", "credentials", "region"),
    ("AuthFailure", "credentials", "cloud"),
    ("UnauthorizedOperation", "credentials", "cloud"),
    ("InvalidClientTokenId", "credentials", "cloud"),
    ("ExpiredToken", "credentials", "cloud"),
    ("SignatureDoesNotMatch", "credentials", "cloud"),
    ("RequestLimitExceeded", "outage", "region"),
    ("InternalError", "outage", "region"),
    ("Unavailable", "outage", "region"),
    ("InvalidAMIID.NotFound", "other", "region"),
    ("InvalidAMIID.Malformed", "other", "region"),
    ("InvalidParameterValue", "other", "region"),
])
def test_ec2_codes_block_the_zone_region_or_cloud_they_concern(code, kind, scope):
    error = errors.classify(client_error(code, "EC2 says so"), "us-east-1", "use1-az1")
    assert (error.kind, error.scope) == (kind, scope)
    assert error.reason.startswith(f"{code}: EC2 says so") or f"{code}: EC2 says so" in error.reason


def test_capacity_reasons_name_the_zone_and_quota_reasons_the_region():
    capacity = errors.classify(client_error("InsufficientInstanceCapacity", "We currently do not have"
                                            " sufficient p4d.24xlarge capacity"), "us-east-1", "use1-az1")
    assert capacity.reason == ("InsufficientInstanceCapacity: We currently do not have sufficient"
                               " p4d.24xlarge capacity (us-east-1/use1-az1)")
    quota = errors.classify(client_error("VcpuLimitExceeded", "You have requested more vCPU capacity"),
                            "eu-west-1", "euw1-az1")
    assert quota.reason == "VcpuLimitExceeded: You have requested more vCPU capacity (eu-west-1)"


def test_auth_failure_in_an_opt_in_region_blocks_that_region_only():
    # EC2 answers AuthFailure in a region the account has not enabled.
    error = errors.classify(client_error("AuthFailure", "AWS was not able to validate the provided"
                                         " access credentials"), "af-south-1", "afs1-az1")
    assert (error.kind, error.scope) == ("credentials", "region")
    assert "af-south-1 is an opt-in region" in error.reason


def test_an_unknown_ami_names_it():
    error = errors.classify(client_error("InvalidAMIID.NotFound", "The image id '[ami-0abc]' does not exist"),
                            "us-west-2")
    assert error.reason == "image not usable in us-west-2: InvalidAMIID.NotFound: The image id '[ami-0abc]' does not exist"


def test_botocore_errors_are_outages_or_credentials():
    unreachable = errors.classify(boto_errors.EndpointConnectionError(
        endpoint_url="https://ec2.ap-east-1.amazonaws.com/"), "ap-east-1")
    assert (unreachable.kind, unreachable.scope) == ("outage", "region")
    assert unreachable.reason.startswith("EC2 in ap-east-1 unreachable: Could not connect to the endpoint URL")
    timeout = errors.classify(boto_errors.ConnectTimeoutError(endpoint_url="https://x"), "us-east-1")
    assert (timeout.kind, timeout.scope) == ("outage", "region")
    for exc in (boto_errors.NoCredentialsError(), boto_errors.ProfileNotFound(profile="work")):
        error = errors.classify(exc, "us-east-1")
        assert (error.kind, error.scope) == ("credentials", "cloud"), exc


def test_a_reason_is_one_bounded_line():
    error = errors.classify(client_error("UnauthorizedOperation", "You are not authorized.\nEncoded"
                                         " authorization failure message: " + "x" * 5000), "us-east-1")
    # At most REASON_LIMIT characters of EC2's text, and a note of how many were left out.
    assert "\n" not in error.reason and len(error.reason) < errors.REASON_LIMIT + 40
    assert "characters left out" in error.reason
    assert error.reason.startswith("UnauthorizedOperation: You are not authorized. Encoded")


class _Flaky:
    """A client method failing with ``failures`` in turn, then answering."""

    def __init__(self, *failures: BaseException):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, **params):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"ok": params}


def test_throttling_and_transient_errors_are_retried_a_few_times():
    method = _Flaky(client_error("RequestLimitExceeded"), client_error("InternalError", status=500))
    assert errors.call(method, Key="v") == {"ok": {"Key": "v"}} and method.calls == 3
    lost = _Flaky(boto_errors.ReadTimeoutError(endpoint_url="https://x"))
    assert errors.call(lost) == {"ok": {}} and lost.calls == 2


def test_retries_are_bounded():
    method = _Flaky(*[client_error("Throttling") for _ in range(10)])
    with pytest.raises(boto_errors.ClientError, match="Throttling"):
        errors.call(method)
    assert method.calls == errors.TRIES


def test_capacity_and_unreachable_endpoints_are_not_retried():
    # InsufficientInstanceCapacity comes as a server error, yet retrying it in place is pointless.
    for failure in (client_error("InsufficientInstanceCapacity", status=500),
                    boto_errors.EndpointConnectionError(endpoint_url="https://x"),
                    client_error("VcpuLimitExceeded")):
        method = _Flaky(failure)
        with pytest.raises(type(failure)):
            errors.call(method)
        assert method.calls == 1


def test_a_retry_is_skipped_when_the_first_try_turns_out_to_have_worked():
    method = _Flaky(client_error("RequestLimitExceeded"))
    assert errors.call(method, settled=lambda: {"found": True}) == {"found": True}
    assert method.calls == 1


def test_cli_verbs_get_one_line_errors_with_hints():
    error = errors.user_error(client_error("AuthFailure", "AWS was not able to validate"), "stop cluster c",
                              "us-east-1")
    assert isinstance(error, SkykError)
    assert error.one_line() == ("AWS could not stop cluster c: AuthFailure: AWS was not able to validate"
                                " (hint: check the credentials with 'aws sts get-caller-identity'"
                                " (or run 'aws configure'))")


def test_ports_merge_into_ranges_with_ssh():
    assert security_groups.port_ranges(()) == [(22, 22)]
    assert security_groups.port_ranges((8000, 8001, 8002, 8080, 22, 23)) == [(22, 23), (8000, 8002), (8080, 8080)]


class _GroupsInUse:
    """An EC2 client whose DeleteSecurityGroup answers as EC2 does for groups in use or gone."""

    def __init__(self, answers: dict[str, str | None]):
        self.answers = answers

    def delete_security_group(self, GroupId):  # noqa: N803 - boto3's parameter name
        code = self.answers[GroupId]
        if code:
            raise client_error(code, f"resource {GroupId} has a dependent object", "DeleteSecurityGroup")
        return {}


def test_deleting_groups_reports_those_still_in_use():
    client = _GroupsInUse({"sg-1": None, "sg-2": "DependencyViolation", "sg-3": "InvalidGroup.NotFound"})
    assert security_groups.delete(client, ["sg-1", "sg-2", "sg-3"]) == ["sg-2"]
    with pytest.raises(boto_errors.ClientError, match="UnauthorizedOperation"):
        security_groups.delete(_GroupsInUse({"sg-4": "UnauthorizedOperation"}), ["sg-4"])

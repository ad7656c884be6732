"""The fake S3 (tests/fakecloud/s3.py): moto's S3 that accepts the bed's key alone, one account per bed.

Driven with real boto3 clients pointed at the bed's endpoint.
"""

from __future__ import annotations

import socket
import threading

import pytest
from botocore.exceptions import ClientError
from fakecloud import FakeS3


@pytest.fixture
def s3():
    with FakeS3() as bed:
        yield bed


def _code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_objects_round_trip_with_keys_that_need_encoding(s3):
    client = s3.client()
    client.create_bucket(Bucket="bucket-one")
    key = "dir/a file+plus%percent~é.txt"
    client.put_object(Bucket="bucket-one", Key=key, Body=b"payload")
    assert [o["Key"] for o in client.list_objects_v2(Bucket="bucket-one")["Contents"]] == [key]
    assert client.get_object(Bucket="bucket-one", Key=key)["Body"].read() == b"payload"


def test_an_unknown_key_and_a_wrong_secret_are_refused_as_s3_refuses_them(s3):
    s3.client().create_bucket(Bucket="bucket-two")
    with pytest.raises(ClientError) as caught:
        s3.client(access_key="AKIAUNKNOWNUNKNOWN00").list_objects_v2(Bucket="bucket-two")
    assert _code(caught) == "InvalidAccessKeyId"
    with pytest.raises(ClientError) as caught:
        s3.client(secret_key="0" * 40).list_objects_v2(Bucket="bucket-two")
    assert _code(caught) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as caught:
        s3.client(secret_key="0" * 40).head_bucket(Bucket="bucket-two")
    assert _code(caught) == "403"


def test_env_names_the_endpoint_and_the_credentials_it_accepts(s3):
    env = s3.env()
    assert env["AWS_ENDPOINT_URL_S3"] == s3.endpoint and s3.endpoint.startswith("http://127.0.0.1:")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (s3.access_key, s3.secret_key)


def test_beds_keep_their_buckets_apart_and_forget_them_when_closed():
    with FakeS3() as first, FakeS3() as second:
        first.client().create_bucket(Bucket="bucket-three")
        assert second.client().list_buckets()["Buckets"] == []
        with pytest.raises(ClientError) as caught:
            second.client().create_bucket(Bucket="bucket-three")  # one namespace, as in S3
        assert _code(caught) == "BucketAlreadyExists"
    with FakeS3() as third:
        third.client().create_bucket(Bucket="bucket-three")


def test_a_bed_can_share_another_beds_keys():
    with FakeS3() as first, FakeS3(access_key=first.access_key, secret_key=first.secret_key) as second:
        assert second.env()["AWS_SECRET_ACCESS_KEY"] == first.secret_key
        second.client().list_buckets()


def test_closing_stops_serving_and_leaves_no_thread():
    before = {t.name for t in threading.enumerate()}
    bed = FakeS3().start()
    port = int(bed.endpoint.rsplit(":", 1)[1])
    bed.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert {t.name for t in threading.enumerate()} - before == set()


def test_host_chooses_the_address_it_listens_on():
    # Node twins reach the bed through their bridge's address; any loopback address stands in here.
    with FakeS3(host="127.0.0.2") as bed:
        assert bed.endpoint.startswith("http://127.0.0.2:")
        bed.client().create_bucket(Bucket="bucket-four")
        with pytest.raises(OSError), socket.create_connection(
                ("127.0.0.1", int(bed.endpoint.rsplit(":", 1)[1])), timeout=5):
            pass

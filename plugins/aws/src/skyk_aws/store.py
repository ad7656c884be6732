"""Amazon S3 as a skyk store: buckets named ``s3://BUCKET/PREFIX``, reached with boto3 and, on nodes, rclone.

This module is imported with the plugin, so it must not import boto3: every
verb that talks to S3 imports :mod:`skyk_aws.session` (the plugin's one
boto3 session, configured as the AWS CLI is) and :mod:`skyk_aws.errors`
inside. Whatever points the AWS CLI at another S3 endpoint
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, an ``endpoint_url`` in the
config file's profile) points this store there too, and the rclone remote
it gives nodes (:meth:`S3Store.node_access`) reaches the same endpoint.
"""

from __future__ import annotations

import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skyk.provision.cloud import CredentialCheck
from skyk.storage.store import BucketRef, NodeAccess, Store, StoreError

NAME = "s3"
SCHEME = "s3://"
#: The tag every bucket skyk creates carries, so that skyk's buckets are findable in an account.
MANAGED_TAG = {"Key": "skyk-managed", "Value": "true"}
#: Files uploaded at once (each large one is itself sent in parallel parts by boto3).
UPLOAD_THREADS = 8
#: What S3 takes in one DeleteObjects request.
DELETE_BATCH = 1000
#: Variables of a node that would take precedence over what the remote says, or break it:
#: AWS_CA_BUNDLE makes rclone's S3 backend fail to load a bundle it does not need; the others
#: are read by the AWS SDK inside rclone and could send it to another endpoint, profile or key.
NODE_UNSET_ENV = (
    "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY",
    "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SDK_LOAD_CONFIG", "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
)
#: Where a bucket's region was learnt (from S3's answers), so that nodes are sent to that region.
_regions: dict[str, str] = {}

_BUCKET_CHARS = re.compile(r"[a-z0-9.-]+")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


class S3Store(Store):
    """Amazon S3 (and S3 endpoints a user points the AWS SDKs at)."""

    name = NAME
    cloud = "aws"
    display_name = "S3"

    # -- names (no network) ---------------------------------------------------------------

    def parse_url(self, url: str) -> BucketRef | None:
        """``s3://BUCKET[/PREFIX][/]``; slashes around the prefix are dropped. Other URLs: None."""
        if not url.startswith(SCHEME):
            return None
        bucket, _, prefix = url[len(SCHEME):].partition("/")
        return BucketRef(NAME, bucket, prefix.strip("/"))

    def url(self, ref: BucketRef) -> str:
        """``s3://BUCKET[/PREFIX]``."""
        return SCHEME + ref.path

    def check_name(self, bucket: str) -> str | None:
        """Why ``bucket`` breaks S3's rules for general purpose bucket names, or None."""
        if not 3 <= len(bucket) <= 63:
            return f"S3 bucket names are 3 to 63 characters long; {bucket!r} has {len(bucket)}"
        if not _BUCKET_CHARS.fullmatch(bucket):
            return (f"S3 bucket names hold only lowercase letters, digits, dots and hyphens;"
                    f" {bucket!r} has others")
        if not (bucket[0].isalnum() and bucket[-1].isalnum()):
            return f"S3 bucket names begin and end with a letter or digit; {bucket!r} does not"
        if ".." in bucket:
            return f"S3 bucket names have no two adjacent dots; {bucket!r} has"
        try:
            ipaddress.IPv4Address(bucket)
        except ValueError:
            pass
        else:
            return f"S3 bucket names are not IP addresses; {bucket!r} is one"
        for prefix in _RESERVED_PREFIXES:
            if bucket.startswith(prefix):
                return f"S3 reserves the prefix {prefix!r}; {bucket!r} starts with it"
        for suffix in _RESERVED_SUFFIXES:
            if bucket.endswith(suffix):
                return f"S3 reserves the suffix {suffix!r}; {bucket!r} ends with it"
        return None

    def check_credentials(self) -> CredentialCheck:
        """The AWS cloud's own check: S3 takes the same credentials as EC2."""
        from skyk_aws.cloud import AWSCloud

        return AWSCloud().check_credentials()

    # -- verbs (network) ------------------------------------------------------------------

    def exists(self, bucket: str) -> bool:
        """Whether ``bucket`` exists; a bucket these credentials may not use is an ``AccessDenied`` error."""
        from botocore.exceptions import BotoCoreError, ClientError

        from skyk_aws import errors, session

        try:
            answer = session.s3().head_bucket(Bucket=bucket)
        except ClientError as exc:
            if errors.error_code(exc) in ("404", "NoSuchBucket"):
                return False
            raise errors.store_error(exc, bucket, "reach") from exc
        except BotoCoreError as exc:
            raise errors.store_error(exc, bucket, "reach") from exc
        region = answer.get("BucketRegion") or _header(answer, "x-amz-bucket-region")
        if region:
            _regions[bucket] = region
        return True

    def create(self, bucket: str, region: str | None) -> None:
        """Create ``bucket`` in ``region`` (the configured one where None), tagged ``skyk-managed=true``."""
        from botocore.exceptions import BotoCoreError, ClientError

        from skyk_aws import errors, session

        client = session.s3(region)
        region = client.meta.region_name or "us-east-1"
        params: dict = {"Bucket": bucket}
        # us-east-1 is S3's default and refuses to be named as a location constraint.
        if region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(**params)
        except (ClientError, BotoCoreError) as exc:
            raise errors.store_error(exc, bucket, "create") from exc
        _regions[bucket] = region
        try:
            client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [MANAGED_TAG]})
        except (ClientError, BotoCoreError) as exc:
            # An untagged bucket would be skyk's without skyk knowing: do not leave it behind.
            self.delete(bucket)
            raise errors.store_error(exc, bucket, "tag") from exc

    def delete(self, bucket: str) -> None:
        """Delete every object (every version) and unfinished upload of ``bucket``, then the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        from skyk_aws import errors

        try:
            client = self._client(bucket)
            self._empty(client, bucket)
            client.delete_bucket(Bucket=bucket)
        except ClientError as exc:
            if errors.error_code(exc) in ("404", "NoSuchBucket"):
                return
            raise errors.store_error(exc, bucket, "delete") from exc
        except BotoCoreError as exc:
            raise errors.store_error(exc, bucket, "delete") from exc
        finally:
            _regions.pop(bucket, None)

    def upload(self, source: Path, dest: BucketRef) -> None:
        """Copy the file or directory ``source`` under ``dest``, a directory's files in parallel."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        from skyk_aws import errors

        if source.is_dir():
            pairs = [(path, path.relative_to(source).as_posix())
                     for path in sorted(source.rglob("*")) if path.is_file()]
        else:
            pairs = [(source, source.name)]
        client = self._client(dest.bucket)
        try:
            with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
                for done in [pool.submit(client.upload_file, str(path), dest.bucket, _key(dest, rel))
                             for path, rel in pairs]:
                    done.result()
        except (ClientError, BotoCoreError) as exc:
            raise errors.store_error(exc, dest.bucket, "upload to") from exc
        except S3UploadFailedError as exc:
            # boto3's transfer manager raises its own error while handling S3's.
            cause = exc.__cause__ or exc.__context__
            raise errors.store_error(cause if isinstance(cause, ClientError) else exc,
                                     dest.bucket, "upload to") from exc

    def list_objects(self, ref: BucketRef) -> list[str]:
        """The keys under ``ref``, relative to its prefix, sorted."""
        from botocore.exceptions import BotoCoreError, ClientError

        from skyk_aws import errors

        prefix = f"{ref.prefix}/" if ref.prefix else ""
        keys: list[str] = []
        try:
            pages = self._client(ref.bucket).get_paginator("list_objects_v2").paginate(
                Bucket=ref.bucket, Prefix=prefix)
            for page in pages:
                keys += [item["Key"][len(prefix):] for item in page.get("Contents", ())]
        except (ClientError, BotoCoreError) as exc:
            raise errors.store_error(exc, ref.bucket, "list") from exc
        # A key ending in "/" is a folder marker (the console makes them), not a file.
        return sorted(key for key in keys if key and not key.endswith("/"))

    def read_object(self, ref: BucketRef, key: str) -> bytes:
        """The contents of ``key`` under ``ref``."""
        from botocore.exceptions import BotoCoreError, ClientError

        from skyk_aws import errors

        try:
            answer = self._client(ref.bucket).get_object(Bucket=ref.bucket, Key=_key(ref, key))
            return answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise errors.store_error(exc, ref.bucket, f"read {key} from") from exc

    # -- nodes ----------------------------------------------------------------------------

    def node_access(self, bucket: str) -> NodeAccess:
        """An rclone ``s3`` remote with this session's key and the endpoint and region the SDK uses.

        Only the access key id, the secret and (for temporary credentials)
        the session token are copied, into the remote's section, which skyk
        writes 0600. No file, no environment variable; ``unset_env`` keeps the
        node's own ``AWS_*`` variables away from rclone.
        """
        from skyk_aws import session

        found = session.credentials()
        if found is None or not found.access_key:
            raise StoreError("S3: no AWS credentials to give the nodes", code="NoCredentials",
                             hint="run 'aws configure' or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        client = self._client(bucket)
        remote = {"type": "s3", "provider": "AWS", "env_auth": "false",
                  "access_key_id": found.access_key, "secret_access_key": found.secret_key,
                  "region": client.meta.region_name or "us-east-1",
                  # skyk made sure the bucket exists; a node may not be allowed to create one.
                  "no_check_bucket": "true"}
        if found.token:
            remote["session_token"] = found.token
        endpoint = client.meta.endpoint_url
        if not _is_aws_endpoint(endpoint):
            # An S3 endpoint of the user's choice (or a test's): rclone's generic S3 provider,
            # with path-style addressing, which every S3 implementation answers.
            remote.update(provider="Other", endpoint=endpoint, force_path_style="true")
        return NodeAccess(remote=remote, unset_env=NODE_UNSET_ENV)

    # -- helpers --------------------------------------------------------------------------

    def _client(self, bucket: str):
        """The S3 client for the region ``bucket`` is known to be in (else the configured one)."""
        from skyk_aws import session

        return session.s3(_regions.get(bucket))

    def _empty(self, client, bucket: str) -> None:
        from botocore.exceptions import ClientError

        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", ()):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        # Versions cover every object of an unversioned bucket too (as version "null").
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [{"Key": item["Key"], "VersionId": item["VersionId"]}
                      for item in (*page.get("Versions", ()), *page.get("DeleteMarkers", ()))]
            for start in range(0, len(doomed), DELETE_BATCH):
                answer = client.delete_objects(Bucket=bucket, Delete={
                    "Objects": doomed[start:start + DELETE_BATCH], "Quiet": True})
                if answer.get("Errors"):
                    # Reported as the error S3 would have raised for that one object.
                    raise ClientError({"Error": answer["Errors"][0]}, "DeleteObjects")


def _key(ref: BucketRef, relative: str) -> str:
    return f"{ref.prefix}/{relative}" if ref.prefix else relative


def _header(answer: dict, name: str) -> str | None:
    return answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get(name)


def _is_aws_endpoint(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


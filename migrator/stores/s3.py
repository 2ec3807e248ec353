"""`ObjectStore` on an S3 bucket (or anything that speaks the S3 API, such as moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import Buffer, ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import ChecksumAlgorithmType

CHECKSUM_ALGORITHMS = frozenset({"CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Store:
    """Keys are joined to `prefix`; every put carries a service-checked `ChecksumAlgorithm`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any | None = None,
        max_pool_connections: int = 32,
        checksum_algorithm: str = "CRC32",
    ) -> None:
        if checksum_algorithm not in CHECKSUM_ALGORITHMS:
            raise ValueError(
                f"checksum_algorithm {checksum_algorithm!r} is not one of "
                f"{', '.join(sorted(CHECKSUM_ALGORITHMS))}"
            )
        self.bucket = bucket
        stripped = prefix.strip("/")
        self.prefix = stripped + "/" if stripped else ""
        self.checksum_algorithm = cast("ChecksumAlgorithmType", checksum_algorithm)
        if client is None:
            config = Config(
                retries={"mode": "standard", "max_attempts": 8},
                max_pool_connections=max_pool_connections,
            )
            # A session per store: boto3's default session is not safe to share across threads.
            client = boto3.session.Session().client(
                "s3", region_name=region, endpoint_url=endpoint_url, config=config
            )
        self._client: S3Client = client

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        full_key = self._full_key(key)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=full_key,
                Body=data if isinstance(data, bytes) else bytes(data),
                Metadata=dict(metadata or {}),
                ChecksumAlgorithm=self.checksum_algorithm,
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise("put", full_key, exc)

    def get(self, key: str) -> bytes:
        full_key = self._full_key(key)
        try:
            # ChecksumMode makes botocore check the stored checksum against the bytes read.
            response = self._client.get_object(
                Bucket=self.bucket, Key=full_key, ChecksumMode="ENABLED"
            )
            return response["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise MissingObjectError(f"not found in {self.describe()}", object_key=key) from exc
            self._raise("get", full_key, exc)
        except BotoCoreError as exc:
            self._raise("get", full_key, exc)

    def head(self, key: str) -> ObjectInfo | None:
        # A HEAD response has no body, so a missing bucket also reads as 404 (None) here.
        full_key = self._full_key(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            self._raise("head", full_key, exc)
        except BotoCoreError as exc:
            self._raise("head", full_key, exc)
        return ObjectInfo(
            key=key, size=response["ContentLength"], metadata=dict(response.get("Metadata", {}))
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Key and size only: ListObjectsV2 does not return user metadata."""
        full_prefix = self.prefix + prefix
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"][len(self.prefix) :], size=item["Size"])
        except (ClientError, BotoCoreError) as exc:
            self._raise("list", full_prefix, exc)

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full_key)
        except (ClientError, BotoCoreError) as exc:
            self._raise("delete", full_key, exc)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _full_key(self, key: str) -> str:
        if not key:
            raise StoreError(f"{self.describe()}: empty object key")
        return self.prefix + key

    def _raise(self, operation: str, full_key: str, exc: ClientError | BotoCoreError) -> NoReturn:
        # Only the error code and message: the full response can carry signing details.
        if isinstance(exc, ClientError):
            reason = f"{_error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise StoreError(f"s3://{self.bucket}/{full_key}: {operation} failed: {reason}") from exc


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))

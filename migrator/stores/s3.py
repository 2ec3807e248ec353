"""`ObjectStore` and `MultipartStore` on an S3 bucket (or anything speaking the S3 API: moto)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    Buffer,
    ObjectInfo,
    PartInfo,
    key_prefix,
)
from migrator.stores.s3_compat import OptionalOperations, ServiceChecksums, is_refusal
from migrator.stores.s3_config import S3ClientSettings, build_s3_client
from migrator.stores.s3_retention import ObjectRetention, object_lock_enabled

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import ChecksumAlgorithmType
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3 rejects smaller parts (all but the last) at CompleteMultipartUpload
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PART_NUMBER = 10_000
MAX_COPY_SIZE = 5 * 1024 * MIB  # CopyObject's limit

CHECKSUM_ALGORITHMS = frozenset({"CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_SUCH_UPLOAD = "NoSuchUpload"

# botocore retries a request until its response headers arrive; a body cut short after that
# reaches us, so get() reads again (a whole new GET) this many times in all.
GET_BODY_ATTEMPTS = 3
_BODY_READ_ERRORS = (
    IncompleteReadError,
    ResponseStreamingError,
    ReadTimeoutError,
    FlexibleChecksumError,
)


class S3Store:
    """Keys are joined to `prefix`; every put and part carries a service-checked checksum.

    `client`, when given, is used as is and the client settings below are ignored.
    What an S3 look-alike lacks (ListMultipartUploads, ListParts, checksum headers) is learnt
    once per store and remembered (s3_compat.py): UnsupportedOperationError, or Content-MD5.
    `sse_kms_key_id` adds SSE-KMS (on top of the client-side encryption) to every object.
    `retention` puts generation records and ledger segments under Object Lock (s3_retention.py).
    """

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
        use_fips: bool | None = None,
        retry_mode: str = "adaptive",
        max_attempts: int = 10,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        profile_name: str | None = None,
        sse_kms_key_id: str | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        allow_small_parts: bool = False,
        retention: ObjectRetention | None = None,
    ) -> None:
        if checksum_algorithm not in CHECKSUM_ALGORITHMS:
            raise ValueError(
                f"checksum_algorithm {checksum_algorithm!r} is not one of "
                f"{', '.join(sorted(CHECKSUM_ALGORITHMS))}"
            )
        smallest_part = 1 if allow_small_parts else MIN_PART_SIZE
        if not smallest_part <= part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"part_size {part_size} is outside {smallest_part}..{MAX_PART_SIZE} bytes"
            )
        if multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive, not {multipart_threshold}")
        if sse_kms_key_id is not None and not sse_kms_key_id:
            raise ValueError("sse_kms_key_id must not be empty (use None for no SSE-KMS)")
        self.bucket = bucket
        self.prefix = key_prefix(prefix)
        self.checksum_algorithm = cast("ChecksumAlgorithmType", checksum_algorithm)
        self.sse_kms_key_id = sse_kms_key_id
        self.retention = retention
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        # Settings are validated even when a client is given, so bad arguments fail the same way.
        self.settings = S3ClientSettings(
            region=region,
            endpoint_url=endpoint_url,
            profile_name=profile_name,
            use_fips=use_fips,
            retry_mode=retry_mode,
            max_attempts=max_attempts,
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._client: S3Client = client if client is not None else build_s3_client(self.settings)
        self._checksum_field = f"Checksum{checksum_algorithm}"  # e.g. ChecksumCRC32
        self._optional = OptionalOperations(self.describe())
        self._checksums = ServiceChecksums(self.checksum_algorithm, self.describe())
        self._sse_args: dict[str, Any] = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse_kms_key_id}
            if sse_kms_key_id
            else {}
        )

    @property
    def client(self) -> S3Client:
        """The boto3 client, for event hooks and for checking which endpoint it calls."""
        return self._client

    # --- ObjectStore ----------------------------------------------------------------------

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        full_key = self._full_key(key)
        try:
            # With a checksum, which Object Lock requires: the algorithm's, or Content-MD5.
            self._checksums.send(
                self._client.put_object,
                "body",
                Bucket=self.bucket,
                Key=full_key,
                Body=data if isinstance(data, bytes) else bytes(data),
                Metadata=dict(metadata or {}),
                **self._sse_args,
                **(self.retention.put_args(metadata or {}) if self.retention else {}),
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise("put", full_key, exc)

    def get(self, key: str) -> bytes:
        full_key = self._full_key(key)
        attempt = 0
        while True:
            attempt += 1
            body = self._open(key, full_key)
            try:
                # Raises rather than return fewer bytes than Content-Length or a bad checksum.
                return body.read()
            except _BODY_READ_ERRORS as exc:
                if attempt >= GET_BODY_ATTEMPTS:
                    self._raise("get", full_key, exc)
            except BotoCoreError as exc:
                self._raise("get", full_key, exc)
            finally:
                body.close()

    def head(self, key: str) -> ObjectInfo | None:
        """Size and user metadata (the engine's format, key id and stored digest live there)."""
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

    def object_lock_enabled(self) -> bool:
        """Whether the bucket can hold objects under retention (checked before a run)."""
        return object_lock_enabled(self._client, self.bucket)

    # --- MultipartStore -------------------------------------------------------------------

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        full_key = self._full_key(key)
        try:
            response = self._checksums.send(
                self._client.create_multipart_upload,
                "announce",
                Bucket=self.bucket,
                Key=full_key,
                Metadata=dict(metadata),
                **self._sse_args,
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise("begin upload", full_key, exc)
        return response["UploadId"]

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        full_key = self._full_key(key)
        self._optional.check("ListParts")
        paginator = self._client.get_paginator("list_parts")
        parts: dict[int, PartInfo] = {}
        try:
            for page in paginator.paginate(Bucket=self.bucket, Key=full_key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    fields = cast(Mapping[str, Any], part)
                    number = int(fields["PartNumber"])
                    parts[number] = PartInfo(
                        number,
                        int(fields["Size"]),
                        fields["ETag"],
                        fields.get(self._checksum_field),
                    )
        except ClientError as exc:
            if _error_code(exc) == _NO_SUCH_UPLOAD:
                return None
            if is_refusal(exc, method_not_allowed=True):
                self._optional.refused("ListParts", exc)
            self._raise(f"list parts of upload {upload_id}", full_key, exc)
        except BotoCoreError as exc:
            self._raise(f"list parts of upload {upload_id}", full_key, exc)
        return parts

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        full_key = self._full_key(key)
        if not 1 <= number <= MAX_PART_NUMBER:
            raise StoreError(
                f"s3://{self.bucket}/{full_key}: part number {number}"
                f" is outside 1..{MAX_PART_NUMBER}"
            )
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            # The checksum goes in a header (or trailer) S3 checks: a corrupted body is rejected.
            response = self._checksums.send(
                self._client.upload_part,
                "body",
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise(f"upload part {number} of upload {upload_id}", full_key, exc)
        checksum = cast(Mapping[str, Any], response).get(self._checksum_field)
        return PartInfo(number, len(body), response["ETag"], checksum)

    def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[PartInfo], metadata: dict[str, str]
    ) -> None:
        """Assembles the parts; `metadata` is what begin_upload was given, or it is replaced.

        S3 fixes metadata at CreateMultipartUpload, so different metadata here costs a
        server-side copy of the object onto itself (only possible up to 5 GiB).
        """
        full_key = self._full_key(key)
        ordered = sorted(parts, key=lambda part: part.number)
        numbers = [part.number for part in ordered]
        if not ordered or len(set(numbers)) != len(numbers):
            raise StoreError(
                f"s3://{self.bucket}/{full_key}: cannot complete upload {upload_id} from parts"
                f" {numbers}: none, or a number twice"
            )
        entries: list[dict[str, Any]] = []
        for part in ordered:
            entry: dict[str, Any] = {"PartNumber": part.number, "ETag": part.etag}
            if part.checksum is not None:
                entry[self._checksum_field] = part.checksum
            entries.append(entry)
        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": cast("list[CompletedPartTypeDef]", entries)},
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise(f"complete upload {upload_id}", full_key, exc)
        self._ensure_metadata(key, full_key, metadata)

    def abort_upload(self, key: str, upload_id: str) -> None:
        full_key = self._full_key(key)
        self._optional.check("AbortMultipartUpload")
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except ClientError as exc:
            if is_refusal(exc, method_not_allowed=True):
                self._optional.refused("AbortMultipartUpload", exc)
            if _error_code(exc) != _NO_SUCH_UPLOAD:
                self._raise(f"abort upload {upload_id}", full_key, exc)
        except BotoCoreError as exc:
            self._raise(f"abort upload {upload_id}", full_key, exc)

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        full_prefix = self.prefix + prefix
        self._optional.check("ListMultipartUploads")
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for upload in page.get("Uploads", []):
                    yield upload["Key"][len(self.prefix) :], upload["UploadId"]
        except ClientError as exc:
            if is_refusal(exc, method_not_allowed=True):
                self._optional.refused("ListMultipartUploads", exc)
            self._raise("list uploads", full_prefix, exc)
        except BotoCoreError as exc:
            self._raise("list uploads", full_prefix, exc)

    # --- helpers --------------------------------------------------------------------------

    def _open(self, key: str, full_key: str) -> StreamingBody:
        try:
            # ChecksumMode makes botocore check the stored checksum against the bytes read.
            response = self._checksums.send(
                self._client.get_object, "read", Bucket=self.bucket, Key=full_key
            )
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise MissingObjectError(f"not found in {self.describe()}", object_key=key) from exc
            self._raise("get", full_key, exc)
        except BotoCoreError as exc:
            self._raise("get", full_key, exc)
        return response["Body"]

    def _ensure_metadata(self, key: str, full_key: str, metadata: dict[str, str]) -> None:
        info = self.head(key)
        if info is None:
            raise StoreError(f"s3://{self.bucket}/{full_key}: absent right after its upload")
        if info.metadata == {name.lower(): value for name, value in metadata.items()}:
            return  # S3 lowercases metadata names
        if info.size > MAX_COPY_SIZE:
            raise StoreError(
                f"s3://{self.bucket}/{full_key}: metadata differs from the upload's and the"
                f" object ({info.size} bytes) is too large to copy: pass it to begin_upload"
            )
        try:
            self._checksums.send(
                self._client.copy_object,
                "announce",
                Bucket=self.bucket,
                Key=full_key,
                CopySource={"Bucket": self.bucket, "Key": full_key},
                Metadata=dict(metadata),
                MetadataDirective="REPLACE",
                **self._sse_args,
            )
        except (ClientError, BotoCoreError) as exc:
            self._raise("replace metadata", full_key, exc)

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

"""What an S3-compatible server may lack, learnt once per store and then remembered.

Optional here: ListMultipartUploads and ListParts (the state journal is the primary record of
open uploads), AbortMultipartUpload (an upload left over costs storage, not correctness) and the
flexible checksum headers (x-amz-checksum-*, x-amz-checksum-mode; every chunk is checked end to
end by its AES-GCM tag and xxh3 digests anyway). Look-alikes answer what they lack with 501
NotImplemented or NotSupported, and a listing or abort also with 405 MethodNotAllowed (never
read as a refusal for a GET: S3 answers 405 for a delete marker).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from botocore.exceptions import ClientError

from migrator.errors import UnsupportedOperationError
from migrator.stores.base import Buffer

if TYPE_CHECKING:
    from mypy_boto3_s3.literals import ChecksumAlgorithmType

log = logging.getLogger("migrator.stores.s3")

T = TypeVar("T")
CheckedRequest = Literal["body", "announce", "read"]  # what a request's checksum covers

_REFUSAL_CODES = frozenset({"NotImplemented", "NotSupported"})
_REFUSAL_STATUS = 501
_NOT_ALLOWED_CODE, _NOT_ALLOWED_STATUS = "MethodNotAllowed", 405


def is_refusal(exc: ClientError, *, method_not_allowed: bool = False) -> bool:
    """Whether the server said it does not implement the request (rather than that it failed).

    `method_not_allowed` counts 405 too: right for a listing or an abort, never for a GET.
    """
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _REFUSAL_CODES or status == _REFUSAL_STATUS:
        return True
    return method_not_allowed and (code == _NOT_ALLOWED_CODE or status == _NOT_ALLOWED_STATUS)


class OptionalOperations:
    """The optional operations one store's server refused: each is asked once per store, then
    refused from memory without a request."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def check(self, operation: str) -> None:
        """Raises UnsupportedOperationError if the server refused `operation` before."""
        if operation in self._refused:
            raise UnsupportedOperationError(
                f"{self.store}: {operation} is not supported by this server (refused earlier)",
                store=self.store,
                operation=operation,
                newly_found=False,
            )

    def refused(self, operation: str, exc: ClientError) -> NoReturn:
        """Remembers that the server refused `operation` and raises that, from exc."""
        with self._lock:
            newly_found = operation not in self._refused
            self._refused.add(operation)
        error = exc.response.get("Error", {})
        raise UnsupportedOperationError(
            f"{self.store}: {operation} is not supported by this server"
            f" ({error.get('Code', 'Unknown')}: {error.get('Message', '')})",
            store=self.store,
            operation=operation,
            newly_found=newly_found,
        ) from exc


class ServiceChecksums:
    """Whether requests carry S3's flexible checksums: on until the server refuses them once,
    then Content-MD5 on every body (which every S3 look-alike checks) and reads unchecked by the
    service. The store's client must add no checksum of its own (request_checksum_calculation
    and response_checksum_validation "when_required"), or the fallback still sends one."""

    def __init__(self, algorithm: ChecksumAlgorithmType, store: str) -> None:
        self.algorithm = algorithm
        self.store = store
        self.enabled = True
        self._lock = threading.Lock()

    def send(self, request: Callable[..., T], checked: CheckedRequest, **params: Any) -> T:
        """request(**params) with the flexible checksum parameters while they are on; if the
        server refuses those, once more without them, and off for good if that works."""
        if not self.enabled:
            return request(**params, **self._legacy(checked, params.get("Body")))
        try:
            return request(**params, **self._flexible(checked))
        except ClientError as exc:
            if not is_refusal(exc):
                raise
            refusal = exc
        # Refused again: that error is raised, and the checksums stay on.
        result = request(**params, **self._legacy(checked, params.get("Body")))
        self._fall_back(getattr(request, "__name__", "a request"), refusal)
        return result

    def _flexible(self, checked: CheckedRequest) -> dict[str, Any]:
        if checked == "read":
            return {"ChecksumMode": "ENABLED"}
        return {"ChecksumAlgorithm": self.algorithm}

    def _legacy(self, checked: CheckedRequest, body: Buffer | None) -> dict[str, Any]:
        if checked == "body" and body is not None:
            return {"ContentMD5": content_md5(body)}
        return {}

    def _fall_back(self, operation: str, refusal: ClientError) -> None:
        with self._lock:
            first = self.enabled
            self.enabled = False
        if first:
            code = refusal.response.get("Error", {}).get("Code", "Unknown")
            log.warning(
                "%s: the server refused S3 checksum headers (%s to %s): sending Content-MD5"
                " instead and reading without service-side checksums; every chunk is still"
                " checked end to end (AES-GCM tag and xxh3 digests)",
                self.store,
                code,
                operation,
            )


def content_md5(body: Buffer) -> str:
    """Base64 MD5 for the Content-MD5 header: a transport check only, so allowed in FIPS mode."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()

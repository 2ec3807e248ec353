"""An S3 bucket of the old platform as a source: keys under a prefix, versioned by their ETag.

Every read sends If-Match with the ETag seen in the listing, so S3 itself refuses (412) to serve
an object that was overwritten since; botocore retries failed requests, and a body cut short
after its headers is asked for again from where it stopped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from migrator.errors import SourceChangedError, SourceError, StoreError
from migrator.sources.base import PrefixedSource, SourceObject, list_page_size
from migrator.sources.listing import KeyRange, OpenRange, Ranges, plan_key_ranges
from migrator.stores.base import key_prefix
from migrator.stores.s3_config import S3ClientSettings, build_s3_client

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import (
        GetObjectOutputTypeDef,
        ListObjectsV2OutputTypeDef,
        ObjectTypeDef,
    )

LIST_PAGE_SIZE = 1000  # ListObjectsV2's maximum
BODY_ATTEMPTS = 3  # a body cut short is requested again from where it stopped, this often
READ_BUFFER_SIZE = 256 * 1024
_BODY_ERRORS = (BotoCoreError, Urllib3Error, OSError)
_CHANGED_CODES = frozenset({"PreconditionFailed", "412", "InvalidRange", "416"})
_GONE_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_XML_CHARS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")  # XML 1.0


class S3Source(PrefixedSource):
    """Keys under `prefix` ('/'-joined, as in the plan); names are relative to it."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any | None = None,
        max_pool_connections: int = 16,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self.page_size = list_page_size(page_size, LIST_PAGE_SIZE)
        self.bucket = bucket
        self.root = f"s3://{bucket}"
        self.prefix = key_prefix(prefix)
        if client is None:
            settings = S3ClientSettings(
                region=region,
                endpoint_url=endpoint_url,
                retry_mode="standard",
                max_pool_connections=max_pool_connections,
            )
            try:
                client = build_s3_client(settings)
            except StoreError as exc:
                raise SourceError(f"{self.describe()}: {exc}") from exc
        self._client: S3Client = client

    def list(self) -> Iterator[SourceObject]:
        """ListObjectsV2 pages: keys in UTF-8 byte order, which is the names' code point order."""
        return self._listing(KeyRange(None, None, ""))

    def list_ranges(self, parts: int) -> Ranges:
        """The first page; then the rest, listed on at once while key ranges beyond are
        planned (sources.listing), which are listed beside it. One page is not cut."""
        skip = len(self.prefix)
        pages = self._pages({"Bucket": self.bucket, "Prefix": self.prefix})
        page = next(pages)
        items = page.get("Contents", [])
        yield iter(list(self._objects(items)))
        if not page.get("IsTruncated"):
            return
        if not items:
            yield (obj for more in pages for obj in self._objects(more.get("Contents", [])))
            return
        last = items[-1]["Key"][skip:]
        tail = OpenRange(last)
        yield self._tail(pages, tail)
        if not _askable(last):
            return  # rare: the rest is listed in turn
        spans = plan_key_ranges(self._first_after, parts, last, _askable, tail.done)
        cuts = [span.upto for span in spans if span.upto is not None]
        yield from (self._listing(span) for span in spans[tail.end_at(cuts) :])

    def _pages(self, request: dict[str, Any]) -> Iterator[ListObjectsV2OutputTypeDef]:
        """ListObjectsV2 pages, one request each as they are needed."""
        request = {**request, "MaxKeys": self.page_size}
        while True:
            try:
                page = self._client.list_objects_v2(**request)
            except (ClientError, BotoCoreError) as exc:
                self._raise(self.describe(), "list", exc)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token
            request.pop("StartAfter", None)  # the token goes on from where the page ended

    def _listing(self, span: KeyRange) -> Iterator[SourceObject]:
        skip = len(self.prefix)
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + span.prefix}
        if span.after is not None and self.prefix + span.after:
            request["StartAfter"] = self.prefix + span.after
        for page in self._pages(request):
            items = page.get("Contents", [])
            yield from span.within(self._objects(items))
            if span.upto is not None and items and items[-1]["Key"][skip:] > span.upto:
                return  # past the range: no further page

    def _tail(
        self, pages: Iterator[ListObjectsV2OutputTypeDef], tail: OpenRange
    ) -> Iterator[SourceObject]:
        """The listing's next pages, until the tail is ended at a cut."""
        skip = len(self.prefix)
        try:
            for page in pages:
                items = page.get("Contents", [])
                kept = tail.take([item["Key"][skip:] for item in items])
                yield from self._objects(items[:kept])
                if kept < len(items):
                    return
        finally:
            tail.finish()

    def _objects(self, items: Sequence[ObjectTypeDef]) -> Iterator[SourceObject]:
        skip = len(self.prefix)
        for item in items:
            key = item["Key"]
            if key.endswith("/") and item["Size"] == 0:  # a console's folder marker
                continue
            yield SourceObject(key[skip:], item["Size"], item["ETag"].strip('"'))

    def _first_after(self, after: str | None, prefix: str) -> str | None:
        """One key's probe: the first name after `after` that starts with `prefix`."""
        request: dict[str, Any] = {"Bucket": self.bucket, "MaxKeys": 1}
        if self.prefix + prefix:
            request["Prefix"] = self.prefix + prefix
        if after is not None and self.prefix + after:
            request["StartAfter"] = self.prefix + after
        try:
            items = self._client.list_objects_v2(**request).get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            self._raise(self.describe(), "list", exc)
        return items[0]["Key"][len(self.prefix) :] if items else None

    def open(self, obj: SourceObject) -> BinaryIO:
        # Requested at once, so an object changed since the listing is refused here.
        body = self.get_body(obj, 0)
        return io.BufferedReader(_ObjectReader(self, obj, body), READ_BUFFER_SIZE)

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        self.check_range(obj, offset, length)
        parts: list[bytes] = []
        done = 0
        for _ in range(BODY_ATTEMPTS):
            body = self.get_body(obj, offset + done, length - done)
            try:
                while done < length:
                    piece = body.read(length - done)
                    if not piece:
                        break
                    parts.append(piece)
                    done += len(piece)
            except _BODY_ERRORS:
                pass  # asked for again below, from where it stopped
            finally:
                body.close()
            if done == length:
                return parts[0] if len(parts) == 1 else b"".join(parts)
        raise SourceError(
            f"{self.location(obj)}: the connection kept ending early at byte {offset + done}"
            f" ({BODY_ATTEMPTS} attempts)"
        )

    def get_body(self, obj: SourceObject, start: int, length: int | None = None) -> Any:
        """The streaming body of bytes `start`.. (to the end, or `length` of them), as listed."""
        key = self.prefix + obj.name
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "IfMatch": f'"{obj.version}"'}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            request["Range"] = f"bytes={start}-{end}"
        try:
            response: GetObjectOutputTypeDef = self._client.get_object(**request)
        except (ClientError, BotoCoreError) as exc:
            self._raise(self.location(obj), "read", exc)
        expected = (obj.size - start) if length is None else length
        if response["ContentLength"] != expected:
            response["Body"].close()
            raise SourceChangedError(
                f"{self.location(obj)}: changed since it was listed (S3 sent"
                f" {response['ContentLength']} bytes, not {expected}); run again to pick it up"
            )
        return response["Body"]

    def _raise(self, where: str, operation: str, exc: ClientError | BotoCoreError) -> NoReturn:
        # Only the error code and message: the full response can carry signing details.
        if not isinstance(exc, ClientError):
            raise SourceError(f"{where}: {operation} failed: {type(exc).__name__}: {exc}") from exc
        code = _error_code(exc)
        if code in _CHANGED_CODES:
            raise SourceChangedError(
                f"{where}: changed since it was listed ({code}); run again to pick it up"
            ) from exc
        if code == "NoSuchBucket":
            raise SourceError(f"{self.root}: bucket does not exist ({code})") from exc
        if code in _GONE_CODES:
            raise SourceChangedError(
                f"{where}: deleted since it was listed ({code}); run again"
            ) from exc
        message = exc.response.get("Error", {}).get("Message", "")
        raise SourceError(f"{where}: {operation} failed: {code}: {message}") from exc


class _ObjectReader(io.RawIOBase):
    """One GetObject streamed; a body cut short is requested again from where it stopped."""

    def __init__(self, source: S3Source, obj: SourceObject, body: Any) -> None:
        self._source = source
        self._obj = obj
        self._pos = 0
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._obj.size - self._pos)
        if want <= 0:
            return 0
        for attempt in range(BODY_ATTEMPTS):
            if attempt:
                self._body.close()
                self._body = self._source.get_body(self._obj, self._pos)
            try:
                count = int(self._body.readinto(view[:want]))
            except _BODY_ERRORS:
                count = 0
            if count:
                self._pos += count
                return count
        raise SourceError(
            f"{self._source.location(self._obj)}: the connection kept ending early at byte"
            f" {self._pos} ({BODY_ATTEMPTS} attempts)"
        )

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _askable(point: str) -> bool:
    """Whether a listing may start after `point`: the answer repeats it in XML, which cannot
    hold every character a key may (moto answers 500 to U+FFFF there), so such points are
    not asked for; the names around them are listed in one run."""
    return _XML_CHARS.fullmatch(point) is not None


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "Unknown")

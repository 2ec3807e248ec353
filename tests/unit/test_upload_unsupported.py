"""Multipart uploads on a store that lacks the optional operations (an S3 look-alike answering
ListParts, ListMultipartUploads or AbortMultipartUpload with 501 NotImplemented): the journal is
the record, an interrupted upload restarts under a fresh salt, and each lack is said once."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from migrator.codec.chunk import ChunkEncoder, decode_chunk
from migrator.errors import StoreError, UnsupportedOperationError
from migrator.state.model import UploadEntry
from migrator.stores.base import Buffer, PartInfo
from migrator.stores.s3_compat import OptionalOperations, is_refusal
from migrator.stores.wrappers import CountingStore
from migrator.write.upload import ChunkUploader, abort_orphaned_uploads
from tests.unit.test_upload_resume import IDENT, KEY, FakeMultipartStore

ENGINE_LOG = "migrator.write.upload"


def not_implemented(operation: str, status: int = 501, code: str = "NotImplemented") -> ClientError:
    """What botocore raises for a look-alike's answer to an operation it lacks."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": "not implemented here"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class LookAlikeStore(FakeMultipartStore):
    """FakeMultipartStore whose server refuses the operations in `lacks`, remembered once per
    store, as S3Store does; keeps every part body sent, by upload id."""

    def __init__(self, lacks: set[str]) -> None:
        super().__init__()
        self.lacks = lacks
        self.optional = OptionalOperations("s3://look-alike/t/")
        self.asked: list[str] = []  # requests that reached the server
        self.sent: dict[str, list[bytes]] = {}

    def _ask(self, operation: str) -> None:
        self.optional.check(operation)
        self.asked.append(operation)
        if operation in self.lacks:
            self.optional.refused(operation, not_implemented(operation))

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        self._ask("ListParts")
        return super().uploaded_parts(key, upload_id)

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        self._ask("ListMultipartUploads")
        return super().list_uploads(prefix)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._ask("AbortMultipartUpload")
        super().abort_upload(key, upload_id)

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        info = super().upload_part(key, upload_id, number, data)
        self.sent.setdefault(upload_id, []).append(bytes(data))
        return info

    def describe(self) -> str:
        return "s3://look-alike/t/"


class MemoryJournal:
    """The state store's upload journal, in a dict: what ChunkUploader reads and writes."""

    def __init__(self) -> None:
        self.entries: dict[str, UploadEntry] = {}

    def journaled_upload(self, object_key: str) -> UploadEntry | None:
        return self.entries.get(object_key)

    def journal_upload(self, entry: UploadEntry) -> None:
        self.entries[entry.object_key] = entry

    def forget_upload(self, object_key: str) -> None:
        self.entries.pop(object_key, None)


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


def interrupted(
    store: LookAlikeStore, journal: MemoryJournal, key: str, plain: bytes
) -> UploadEntry:
    """An upload of plain to key that stopped after 3 parts, as a killed run leaves it."""
    store.crash_after_parts = store.calls["part"] + 3
    with pytest.raises(StoreError, match="injected"):
        ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, key, {})
    store.crash_after_parts = None
    entry = journal.journaled_upload(key)
    assert entry is not None
    return entry


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_without_list_parts_an_upload_restarts_under_a_fresh_salt(
    journal: MemoryJournal, caplog: pytest.LogCaptureFixture
) -> None:
    store = LookAlikeStore({"ListParts"})
    plain = os.urandom(600 * 1024)  # incompressible: ~10 parts of 64 KiB
    entry = interrupted(store, journal, "k", plain)
    before = list(store.sent[entry.upload_id])

    caplog.set_level(logging.WARNING, ENGINE_LOG)
    encoded = ChunkUploader(store, journal).seal_and_store(
        ChunkEncoder(1), plain, IDENT, KEY, "k", {}
    )

    assert decode_chunk(store.get("k"), IDENT, KEY) == plain
    assert encoded.salt != entry.salt and entry.salt not in store.get("k")
    # The journaled upload got no part more and was aborted; a new one took every part.
    assert store.sent[entry.upload_id] == before
    assert entry.upload_id not in store.uploads
    (new_id,) = set(store.sent) - {entry.upload_id}
    parts = -(-encoded.stored_size // store.part_size)
    assert len(store.sent[new_id]) == parts
    assert not any(entry.salt in part for part in store.sent[new_id])
    assert store.calls["begin"] == 2 and store.calls["abort"] == 1
    assert journal.journaled_upload("k") is None
    (warning,) = warnings_of(caplog, "cannot list the parts")
    assert "s3://look-alike/t/" in warning and "ListParts" in warning


def test_the_lack_of_list_parts_is_asked_and_said_once_per_store(
    journal: MemoryJournal, caplog: pytest.LogCaptureFixture
) -> None:
    store = LookAlikeStore({"ListParts"})
    plains = {f"k{i}": os.urandom(300 * 1024) for i in range(3)}
    for key, plain in plains.items():
        interrupted(store, journal, key, plain)
    caplog.set_level(logging.WARNING, ENGINE_LOG)
    uploader = ChunkUploader(store, journal)
    for key, plain in plains.items():
        uploader.seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, key, {})
        assert decode_chunk(store.get(key), IDENT, KEY) == plain
    assert store.asked.count("ListParts") == 1  # the others were refused from memory
    assert len(warnings_of(caplog, "cannot list the parts")) == 1
    assert store.uploads == {}


def test_a_refused_abort_leaves_the_old_upload_and_still_restarts(
    journal: MemoryJournal, caplog: pytest.LogCaptureFixture
) -> None:
    store = LookAlikeStore({"ListParts", "AbortMultipartUpload"})
    first, second = os.urandom(300 * 1024), os.urandom(300 * 1024)
    old = [interrupted(store, journal, "a", first), interrupted(store, journal, "b", second)]
    caplog.set_level(logging.WARNING, ENGINE_LOG)
    uploader = ChunkUploader(store, journal)
    for key, plain in (("a", first), ("b", second)):
        uploader.seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, key, {})
        assert decode_chunk(store.get(key), IDENT, KEY) == plain
    # Left for the bucket's lifecycle rule; never completed, never sent to again.
    assert set(store.uploads) == {entry.upload_id for entry in old}
    assert len(warnings_of(caplog, "cannot abort multipart uploads")) == 1
    assert store.asked.count("AbortMultipartUpload") == 1


def test_a_failed_abort_is_a_warning_naming_the_upload(
    journal: MemoryJournal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LookAlikeStore({"ListParts"})
    plain = os.urandom(300 * 1024)
    entry = interrupted(store, journal, "k", plain)

    def failing_abort(key: str, upload_id: str) -> None:
        raise StoreError(f"s3://look-alike/t/{key}: abort upload {upload_id} failed: AccessDenied")

    monkeypatch.setattr(store, "abort_upload", failing_abort)
    caplog.set_level(logging.WARNING, ENGINE_LOG)
    ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, "k", {})
    assert decode_chunk(store.get("k"), IDENT, KEY) == plain
    (warning,) = warnings_of(caplog, "left unfinished")
    assert entry.upload_id in warning and "AccessDenied" in warning


def test_orphan_sweep_without_listing_relies_on_the_journal(
    journal: MemoryJournal, caplog: pytest.LogCaptureFixture
) -> None:
    store = LookAlikeStore({"ListMultipartUploads"})
    plain = os.urandom(300 * 1024)
    entry = interrupted(store, journal, "videos/k", plain)
    caplog.set_level(logging.WARNING, ENGINE_LOG)
    counted = CountingStore(store)  # wrappers pass the refusal through unchanged
    assert abort_orphaned_uploads(counted, journal, "videos/") == 0
    assert abort_orphaned_uploads(counted, journal, "photos/") == 0
    assert store.asked.count("ListMultipartUploads") == 1
    (warning,) = warnings_of(caplog, "cannot list unfinished multipart uploads")
    assert "s3://look-alike/t/" in warning and "state journal" in warning
    # The journaled upload is resumed from its parts (ListParts works here), not aborted.
    ChunkUploader(counted, journal).seal_and_store(
        ChunkEncoder(1), plain, IDENT, KEY, "videos/k", {}
    )
    assert decode_chunk(store.get("videos/k"), IDENT, KEY) == plain
    assert store.calls["begin"] == 1 and store.calls["abort"] == 0
    assert entry.upload_id not in store.uploads  # completed


def test_orphan_sweep_stops_at_a_refused_abort(
    journal: MemoryJournal, caplog: pytest.LogCaptureFixture
) -> None:
    store = LookAlikeStore({"AbortMultipartUpload"})
    for name in ("a", "b", "c"):
        store.begin_upload(f"videos/{name}", {})
    caplog.set_level(logging.WARNING, ENGINE_LOG)
    assert abort_orphaned_uploads(store, journal, "videos/") == 0
    assert store.asked.count("AbortMultipartUpload") == 1
    assert len(store.uploads) == 3
    assert len(warnings_of(caplog, "cannot abort multipart uploads")) == 1


def test_other_store_errors_still_stop_the_orphan_sweep(journal: MemoryJournal) -> None:
    store = LookAlikeStore(set())

    def failing_listing(prefix: str = "") -> Iterator[tuple[str, str]]:
        raise StoreError("s3://look-alike/t/videos/: list uploads failed: AccessDenied")

    store.list_uploads = failing_listing  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="AccessDenied"):
        abort_orphaned_uploads(store, journal, "videos/")


@pytest.mark.parametrize(
    ("status", "code", "listing", "refused"),
    [
        (501, "NotImplemented", False, True),
        (400, "NotSupported", False, True),
        (501, "Unknown", False, True),
        (405, "MethodNotAllowed", True, True),
        (405, "MethodNotAllowed", False, False),  # a GET of a delete marker answers this
        (400, "InvalidRequest", True, False),
        (400, "BadDigest", False, False),  # a checksum that did not match: a real failure
        (503, "SlowDown", True, False),
        (403, "AccessDenied", True, False),
    ],
)
def test_what_counts_as_a_refusal(status: int, code: str, listing: bool, refused: bool) -> None:
    exc = not_implemented("ListParts", status, code)
    assert is_refusal(exc, method_not_allowed=listing) is refused


def test_optional_operations_remember_each_refusal_per_store() -> None:
    first, other = OptionalOperations("s3://a/"), OptionalOperations("s3://b/")
    first.check("ListParts")
    with pytest.raises(UnsupportedOperationError) as refused:
        first.refused("ListParts", not_implemented("ListParts"))
    assert refused.value.newly_found and refused.value.operation == "ListParts"
    assert refused.value.store == "s3://a/" and "NotImplemented" in str(refused.value)
    with pytest.raises(UnsupportedOperationError) as remembered:
        first.check("ListParts")
    assert not remembered.value.newly_found
    with pytest.raises(UnsupportedOperationError) as again:
        first.refused("ListParts", not_implemented("ListParts"))
    assert not again.value.newly_found
    first.check("ListMultipartUploads")  # another operation: still asked
    other.check("ListParts")  # another store: still asked

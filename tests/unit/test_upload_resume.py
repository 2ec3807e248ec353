"""Multipart uploads resume from the parts the store has, and only when the bytes are the same."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator.codec.chunk import ChunkEncoder, decode_chunk
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.errors import StoreError
from migrator.keys.datakey import DataKey
from migrator.state.db import StateDB
from migrator.state.model import UploadEntry
from migrator.stores.base import Buffer, MultipartStore, PartInfo
from migrator.stores.memory import MemoryStore
from migrator.write.upload import ChunkUploader, abort_orphaned_uploads


class FakeMultipartStore(MemoryStore):
    """MemoryStore plus multipart uploads; `crash_after_parts` raises mid-upload like a kill."""

    def __init__(self, part_size: int = 64 * 1024, threshold: int = 100 * 1024) -> None:
        super().__init__()
        self.part_size = part_size
        self.multipart_threshold = threshold
        self.uploads: dict[str, tuple[str, dict[int, bytes]]] = {}
        self.calls: Counter[str] = Counter()
        self.crash_after_parts: int | None = None
        self._mp_lock = threading.Lock()

    def begin_upload(self, key: str, metadata: dict[str, str]) -> str:
        self.calls["begin"] += 1
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = (key, {})
        return upload_id

    def uploaded_parts(self, key: str, upload_id: str) -> dict[int, PartInfo] | None:
        self.calls["list_parts"] += 1
        if upload_id not in self.uploads:
            return None
        parts = self.uploads[upload_id][1]
        return {n: PartInfo(n, len(d), f"etag{n}") for n, d in parts.items()}

    def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> PartInfo:
        if self.crash_after_parts is not None and self.calls["part"] >= self.crash_after_parts:
            raise StoreError("connection lost (injected)")
        self.calls["part"] += 1
        self.uploads[upload_id][1][number] = bytes(data)
        return PartInfo(number, len(data), f"etag{number}")

    def complete_upload(
        self, key: str, upload_id: str, parts: list[PartInfo], metadata: dict[str, str]
    ) -> None:
        self.calls["complete"] += 1
        stored = self.uploads.pop(upload_id)[1]
        self.put(key, b"".join(stored[p.number] for p in parts), metadata)

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.calls["abort"] += 1
        self.uploads.pop(upload_id, None)

    def list_uploads(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        for upload_id, (key, _) in list(self.uploads.items()):
            if key.startswith(prefix):
                yield key, upload_id


IDENT = ChunkIdentity(ChunkKind.OBJECT_PART, "p", "videos", 1, 0, 0, b"\x01" * 16)
KEY = DataKey(os.urandom(32))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[StateDB]:
    with StateDB.sqlite_file(tmp_path / "state.sqlite") as state:
        for dataset in ("k", "videos"):  # what the object keys begin with: digests are sealed
            state.bind_dataset_key(dataset, KEY)
        yield state


def test_store_is_multipart() -> None:
    assert isinstance(FakeMultipartStore(), MultipartStore)


def test_small_chunk_is_one_put(journal: StateDB) -> None:
    store = FakeMultipartStore()
    ChunkUploader(store, journal).seal_and_store(
        ChunkEncoder(1), os.urandom(1000), IDENT, KEY, "k", {}
    )
    assert store.requests["put"] == 1 and store.calls["begin"] == 0


def test_interrupted_upload_resumes_without_resending_parts(journal: StateDB) -> None:
    store = FakeMultipartStore()
    plain = os.urandom(600 * 1024)  # incompressible: ~10 parts of 64 KiB
    store.crash_after_parts = 4
    with pytest.raises(StoreError):
        ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, "k", {})
    assert journal.journaled_upload("k") is not None and store.calls["part"] == 4
    store.crash_after_parts = None
    encoded = ChunkUploader(store, journal).seal_and_store(
        ChunkEncoder(1), plain, IDENT, KEY, "k", {}
    )
    parts = -(-encoded.stored_size // store.part_size)
    assert store.calls["part"] == parts  # 4 before the crash, the rest after: none twice
    assert store.calls["begin"] == 1 and store.calls["abort"] == 0
    assert decode_chunk(store.get("k"), IDENT, KEY) == plain
    assert journal.journaled_upload("k") is None


def test_changed_plaintext_aborts_and_starts_afresh(journal: StateDB) -> None:
    store = FakeMultipartStore()
    plain = os.urandom(600 * 1024)
    store.crash_after_parts = 3
    with pytest.raises(StoreError):
        ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, "k", {})
    first = journal.journaled_upload("k")
    store.crash_after_parts = None
    other = os.urandom(600 * 1024)
    ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), other, IDENT, KEY, "k", {})
    assert store.calls["abort"] == 1 and store.calls["begin"] == 2
    assert decode_chunk(store.get("k"), IDENT, KEY) == other
    stored = store.get("k")
    assert first is not None and first.salt not in stored  # a fresh salt, not the journaled one


def test_vanished_upload_starts_afresh(journal: StateDB) -> None:
    store = FakeMultipartStore()
    plain = os.urandom(300 * 1024)
    store.crash_after_parts = 2
    with pytest.raises(StoreError):
        ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, "k", {})
    store.uploads.clear()  # the service expired it
    store.crash_after_parts = None
    ChunkUploader(store, journal).seal_and_store(ChunkEncoder(1), plain, IDENT, KEY, "k", {})
    assert decode_chunk(store.get("k"), IDENT, KEY) == plain


def test_orphaned_uploads_are_aborted(journal: StateDB) -> None:
    store = FakeMultipartStore()
    store.begin_upload("videos/x", {})
    kept = store.begin_upload("videos/y", {})
    journal.journal_upload(UploadEntry("videos/y", kept, b"s" * 32, b"p" * 16, b"q" * 16, 1))
    assert abort_orphaned_uploads(store, journal, "videos/") == 1
    assert [k for k, _ in store.list_uploads()] == ["videos/y"]

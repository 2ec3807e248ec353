"""Seal and store one chunk: a single put, or a journaled multipart upload that can resume.

An interrupted multipart upload is resumed only when re-sealing the chunk reproduces the very
bytes of the first attempt: same plaintext (xxh3-128 journaled), re-sealed under the journaled
salt, giving the same stored digest. Then only the parts the store lacks are sent. Anything else
aborts the old upload and starts afresh under a fresh salt; a mismatching re-seal is dropped
unsent, so no two different ciphertexts under one key and nonce ever leave the process.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import Protocol

import xxhash

from migrator.codec.chunk import ChunkEncoder, EncodedChunk
from migrator.codec.identity import ChunkIdentity
from migrator.keys.datakey import DataKey
from migrator.state.model import UploadEntry
from migrator.stores.base import Buffer, MultipartStore, ObjectStore, PartInfo

Plaintext = bytes | bytearray | memoryview


class UploadJournal(Protocol):
    def journaled_upload(self, object_key: str) -> UploadEntry | None: ...

    def journal_upload(self, entry: UploadEntry) -> None: ...

    def forget_upload(self, object_key: str) -> None: ...


class ChunkUploader:
    def __init__(
        self,
        store: ObjectStore,
        journal: UploadJournal | None,
        *,
        on_part: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.multipart = store if isinstance(store, MultipartStore) and journal else None
        self.journal = journal
        self.on_part = on_part  # (object_key, part number) after each part is confirmed

    def seal_and_store(
        self,
        encoder: ChunkEncoder,
        plaintext: Plaintext,
        identity: ChunkIdentity,
        key: DataKey,
        object_key: str,
        metadata: dict[str, str],
        out: bytearray | mmap.mmap | None = None,
    ) -> EncodedChunk:
        mp = self.multipart
        if mp is not None:
            resumed = self._resume(mp, encoder, plaintext, identity, key, object_key, metadata, out)
            if resumed is not None:
                return resumed
        encoded = encoder.encode(plaintext, identity, key, out=out)
        meta = {**metadata, "migrator-stored-xxh3": encoded.stored_xxh3.hex()}
        if mp is None or encoded.stored_size <= mp.multipart_threshold:
            self.store.put(object_key, encoded.data, meta)
            return encoded
        assert self.journal is not None
        upload_id = mp.begin_upload(object_key, meta)
        self.journal.journal_upload(
            UploadEntry(
                object_key,
                upload_id,
                encoded.salt,
                encoded.plain_xxh3,
                encoded.stored_xxh3,
                encoded.stored_size,
            )
        )
        self._send(mp, object_key, upload_id, encoded.data, {}, meta)
        return encoded

    def _resume(
        self,
        mp: MultipartStore,
        encoder: ChunkEncoder,
        plaintext: Plaintext,
        identity: ChunkIdentity,
        key: DataKey,
        object_key: str,
        metadata: dict[str, str],
        out: bytearray | mmap.mmap | None,
    ) -> EncodedChunk | None:
        assert self.journal is not None
        entry = self.journal.journaled_upload(object_key)
        if entry is None:
            return None
        if xxhash.xxh3_128_digest(plaintext) == entry.plain_xxh3:
            encoded = encoder.encode(plaintext, identity, key, out=out, salt=entry.salt)
            parts = mp.uploaded_parts(object_key, entry.upload_id)
            if encoded.stored_xxh3 == entry.stored_xxh3 and parts is not None:
                meta = {**metadata, "migrator-stored-xxh3": encoded.stored_xxh3.hex()}
                self._send(mp, object_key, entry.upload_id, encoded.data, parts, meta)
                return encoded
        # Not the same bytes, or the upload is gone: start over under a fresh salt.
        mp.abort_upload(object_key, entry.upload_id)
        self.journal.forget_upload(object_key)
        return None

    def _send(
        self,
        mp: MultipartStore,
        object_key: str,
        upload_id: str,
        data: Buffer,
        have: dict[int, PartInfo],
        metadata: dict[str, str],
    ) -> None:
        view = memoryview(data)
        size = mp.part_size
        parts: list[PartInfo] = []
        for number, offset in enumerate(range(0, len(view), size), start=1):
            piece = view[offset : offset + size]
            prior = have.get(number)
            if prior is not None and prior.size == len(piece):
                parts.append(prior)  # the store has it already: not sent again
                continue
            parts.append(mp.upload_part(object_key, upload_id, number, piece))
            if self.on_part is not None:
                self.on_part(object_key, number)
        mp.complete_upload(object_key, upload_id, parts, metadata)
        assert self.journal is not None
        self.journal.forget_upload(object_key)


def abort_orphaned_uploads(store: ObjectStore, journal: UploadJournal, prefix: str) -> int:
    """Abort unfinished uploads under prefix that the journal does not know: a crash between
    begin and journal, or another run's leftovers. Returns how many were aborted."""
    if not isinstance(store, MultipartStore):
        return 0
    aborted = 0
    for object_key, upload_id in list(store.list_uploads(prefix)):
        entry = journal.journaled_upload(object_key)
        if entry is None or entry.upload_id != upload_id:
            store.abort_upload(object_key, upload_id)
            aborted += 1
    return aborted

"""Seal and store one chunk: a single put, or a journaled multipart upload that can resume.

An interrupted multipart upload is resumed only when re-sealing the chunk reproduces the very
bytes of the first attempt: same plaintext (xxh3-128 journaled), re-sealed under the journaled
salt, giving the same stored digest. Then only the parts the store lacks are sent. Anything else
aborts the old upload and starts afresh under a fresh salt; a mismatching re-seal is dropped
unsent, so no two different ciphertexts under one key and nonce ever leave the process.

A store whose server cannot list an upload's parts (an S3 look-alike without ListParts) gets the
same fresh start; one that cannot list unfinished uploads leaves the state journal the only
record of them. Either is said once, as a warning, and the run goes on.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from typing import NamedTuple, Protocol

import xxhash

from migrator.codec.chunk import ChunkEncoder, EncodedChunk
from migrator.codec.identity import ChunkIdentity
from migrator.errors import StoreError, UnsupportedOperationError
from migrator.keys.datakey import DataKey
from migrator.repository.shard_objects import put_chunk
from migrator.state.model import UploadEntry
from migrator.stores.base import Buffer, MultipartStore, ObjectStore, PartInfo, UnfinishedWrites

Plaintext = bytes | bytearray | memoryview

log = logging.getLogger(__name__)


class UploadJournal(Protocol):
    def journaled_upload(self, object_key: str) -> UploadEntry | None: ...

    def journal_upload(self, entry: UploadEntry) -> None: ...

    def forget_upload(self, object_key: str) -> None: ...


class _Multipart(NamedTuple):
    """A store that takes multipart uploads, and the journal that lets one resume."""

    store: MultipartStore
    journal: UploadJournal


class ChunkUploader:
    def __init__(
        self,
        store: ObjectStore,
        journal: UploadJournal | None,
        *,
        on_part: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.multipart = (
            _Multipart(store, journal)
            if isinstance(store, MultipartStore) and journal is not None
            else None
        )
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
        *,
        scratch: Callable[[int], bytearray | mmap.mmap] | None = None,
        sealed: Callable[[], None] | None = None,
    ) -> EncodedChunk:
        """`scratch(size)` lends the encoder a buffer for a frame on its way to the cipher;
        `sealed()` is called once the chunk is sealed for good, before it is stored: the
        plaintext and the buffers lent are not read again (the caller may reuse them)."""
        multipart = self.multipart

        def seal(salt: bytes | None = None) -> EncodedChunk:
            return encoder.encode(plaintext, identity, key, out=out, salt=salt, scratch=scratch)

        if multipart is not None:
            resumed = self._resume(multipart, plaintext, seal, object_key, metadata, sealed)
            if resumed is not None:
                return resumed
        encoded = seal()
        if sealed is not None:
            sealed()
        meta = _stored_meta(metadata, encoded)
        if multipart is None or encoded.stored_size <= multipart.store.multipart_threshold:
            put_chunk(self.store, object_key, encoded.data, meta)
            return encoded
        mp, journal = multipart
        upload_id = mp.begin_upload(object_key, meta)
        journal.journal_upload(
            UploadEntry(
                object_key,
                upload_id,
                encoded.salt,
                encoded.plain_xxh3,
                encoded.stored_xxh3,
                encoded.stored_size,
            )
        )
        self._send(multipart, object_key, upload_id, encoded.data, {}, meta)
        return encoded

    def _resume(
        self,
        multipart: _Multipart,
        plaintext: Plaintext,
        seal: Callable[[bytes], EncodedChunk],
        object_key: str,
        metadata: dict[str, str],
        sealed: Callable[[], None] | None,
    ) -> EncodedChunk | None:
        """Go on with the journaled upload of this chunk if the store still holds its parts and
        the plaintext, sealed again under the journaled salt, is the same stored bytes."""
        mp, journal = multipart
        entry = journal.journaled_upload(object_key)
        if entry is None:
            return None
        if xxhash.xxh3_128_digest(plaintext) == entry.plain_xxh3:
            parts = _parts_held(mp, self.store.describe(), object_key, entry.upload_id)
            if parts is not None:
                encoded = seal(entry.salt)
                if encoded.stored_xxh3 == entry.stored_xxh3:
                    if sealed is not None:
                        sealed()
                    meta = _stored_meta(metadata, encoded)
                    self._send(multipart, object_key, entry.upload_id, encoded.data, parts, meta)
                    return encoded
        # Not the same bytes, or the upload is gone or unlistable: start over under a fresh salt.
        _abort_left_behind(mp, self.store.describe(), object_key, entry.upload_id)
        journal.forget_upload(object_key)
        return None

    def _send(
        self,
        multipart: _Multipart,
        object_key: str,
        upload_id: str,
        data: Buffer,
        have: dict[int, PartInfo],
        metadata: dict[str, str],
    ) -> None:
        mp, journal = multipart
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
        journal.forget_upload(object_key)


def _stored_meta(metadata: dict[str, str], encoded: EncodedChunk) -> dict[str, str]:
    """The object's metadata, with the digest of the bytes stored (what a reader checks)."""
    return {**metadata, "migrator-stored-xxh3": encoded.stored_xxh3.hex()}


def abort_orphaned_uploads(store: ObjectStore, journal: UploadJournal, prefix: str) -> int:
    """Abort unfinished uploads under prefix that the journal does not know: a crash between
    begin and journal, or another run's leftovers. Returns how many were aborted.

    A store that cannot list them is warned about once and skipped: the journal still names the
    uploads this process began, and ChunkUploader resumes or aborts each of those.
    A local folder's unfinished writes are the files killed writes left there.
    """
    # A store leaves files of killed writes (a local folder) or multipart uploads, not both.
    if isinstance(store, UnfinishedWrites):
        removed = store.remove_unfinished_writes(prefix)
        if removed or not isinstance(store, MultipartStore):
            return removed
    if not isinstance(store, MultipartStore):
        return 0
    try:
        uploads = list(store.list_uploads(prefix))
    except UnsupportedOperationError as exc:
        if exc.newly_found:
            log.warning(
                "%s: cannot list unfinished multipart uploads (%s is not supported): the state"
                " journal is the only record of them; an upload begun just before a crash and"
                " not yet journaled stays until the bucket's lifecycle rule"
                " (AbortIncompleteMultipartUpload) removes it",
                store.describe(),
                exc.operation,
            )
        return 0
    aborted = 0
    for object_key, upload_id in uploads:
        entry = journal.journaled_upload(object_key)
        if entry is None or entry.upload_id != upload_id:
            try:
                store.abort_upload(object_key, upload_id)
            except UnsupportedOperationError as exc:
                _warn_cannot_abort(store.describe(), exc)
                break  # the rest would be refused alike
            aborted += 1
    return aborted


def _parts_held(
    mp: MultipartStore, where: str, object_key: str, upload_id: str
) -> dict[int, PartInfo] | None:
    """The parts the store holds of an upload; None when it is gone or they cannot be listed."""
    try:
        return mp.uploaded_parts(object_key, upload_id)
    except UnsupportedOperationError as exc:
        if exc.newly_found:
            log.warning(
                "%s: cannot list the parts of a multipart upload (%s is not supported): an"
                " interrupted upload is aborted and sent again in full, under a fresh salt",
                where,
                exc.operation,
            )
        return None


def _abort_left_behind(mp: MultipartStore, where: str, object_key: str, upload_id: str) -> None:
    """Abort an upload nothing will complete; one the store cannot abort is left, with a
    warning, for the bucket's lifecycle rule: what is sent next is under a fresh salt anyway."""
    try:
        mp.abort_upload(object_key, upload_id)
    except UnsupportedOperationError as exc:
        _warn_cannot_abort(where, exc)
    except StoreError as exc:
        log.warning("upload %s of %s left unfinished: %s", upload_id, object_key, exc)


def _warn_cannot_abort(where: str, exc: UnsupportedOperationError) -> None:
    if exc.newly_found:
        log.warning(
            "%s: cannot abort multipart uploads (%s is not supported): uploads left unfinished"
            " stay until the bucket's lifecycle rule (AbortIncompleteMultipartUpload) removes"
            " them",
            where,
            exc.operation,
        )

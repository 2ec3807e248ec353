"""The multipart upload journal: an upload in flight is noted before its first part, so a rerun
resumes it (sealing the same bytes again) instead of starting over, and forgotten once it
completes or is abandoned."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import bindparam, delete, select

from migrator.repository.names import dataset_of
from migrator.state.model import UploadEntry
from migrator.state.schema import uploads
from migrator.state.sealed import UPLOAD_DIGEST
from migrator.state.tables.base import SealedTable

_UPLOAD_COLUMNS = (
    uploads.c.object_key,
    uploads.c.upload_id,
    uploads.c.salt,
    uploads.c.plain_xxh3,
    uploads.c.stored_xxh3,
    uploads.c.stored_size,
)
_UPLOAD = select(*_UPLOAD_COLUMNS).where(uploads.c.object_key == bindparam("k"))


class UploadJournal(SealedTable):
    def journaled_upload(self, object_key: str) -> UploadEntry | None:
        with self.backend.read() as conn:
            row = conn.execute(_UPLOAD, {"k": object_key}).fetchone()  # rare: not the fast path
        return None if row is None else self._entry(row)

    def journal_upload(self, entry: UploadEntry) -> None:
        sealer = self.sealers.require(dataset_of(entry.object_key), UPLOAD_DIGEST)
        row = {
            "object_key": entry.object_key,
            "upload_id": entry.upload_id,
            "salt": entry.salt,
            "plain_xxh3": sealer.seal_bytes(UPLOAD_DIGEST, entry.plain_xxh3),
            "stored_xxh3": entry.stored_xxh3,
            "stored_size": entry.stored_size,
            "started_at": time.time(),
        }
        with self.backend.write("journal an upload") as conn:
            conn.execute(self.backend.upsert(uploads, row, ["object_key"]), row)

    def forget_upload(self, object_key: str) -> None:
        with self.backend.write("forget an upload") as conn:
            conn.execute(delete(uploads).where(uploads.c.object_key == object_key))

    def journaled_uploads(self) -> list[UploadEntry]:
        with self.backend.read() as conn:
            rows = conn.execute(select(*_UPLOAD_COLUMNS).order_by(uploads.c.object_key))
            return [self._entry(r) for r in rows]

    def _entry(self, row: Any) -> UploadEntry:
        digest = self.sealers.open_bytes(dataset_of(row[0]), UPLOAD_DIGEST, bytes(row[3]))
        return UploadEntry(row[0], row[1], bytes(row[2]), digest, bytes(row[4]), int(row[5]))

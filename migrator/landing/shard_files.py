"""Records landed as files: one JSONL or CSV object per shard, `<dataset>/shard-00012.jsonl`,
rewritten whole with the shard's live records each time it lands, so a reader sees one
generation or the next, never half a delta.

Each record is written as archived, followed by a line feed; a CSV file starts with its header
row. The object's metadata says which generation it holds (migrator-generation) and how many
records (migrator-records), and the proof reads the records back from the object itself.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable
from typing import IO

from migrator.codec.digests import add, record_digest
from migrator.errors import FormatError, LandingError, MigratorError
from migrator.landing.bucket import part_length
from migrator.landing.target import LandedContent
from migrator.records.framing import split_stored_records, stored_framing
from migrator.stores.base import DEFAULT_PART_SIZE, MultipartStore, ObjectStore, PartInfo

META_GENERATION = "migrator-generation"
META_RECORDS = "migrator-records"

SPOOL_IN_MEMORY = 16 * 1024 * 1024  # a shard file above this is spooled to a temporary file


class BucketShardFiles:
    """A records dataset landed as per-shard files under a store (prefix, encryption and
    checksums set by whoever opened it). `key`: the dataset's key field, for messages."""

    def __init__(
        self, store: ObjectStore, *, dataset: str, fmt: str, delimiter: str, key: str
    ) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"shard files are jsonl or csv, not {fmt!r}")
        self.store = store
        self.dataset = dataset
        self.fmt = fmt
        self.delimiter = delimiter
        self.key = key
        self.framing = stored_framing(delimiter if fmt == "csv" else None)

    def describe(self) -> str:
        return (
            f"{self.fmt} files of dataset {self.dataset} (keyed by {self.key}) in"
            f" {self.store.describe()}"
        )

    def object_key(self, shard: int) -> str:
        return f"{self.dataset}/shard-{shard:05d}.{self.fmt}"

    def landed_generation(self, shard: int) -> int | None:
        info = self.store.head(self.object_key(shard))
        if info is None:
            return None
        value = info.metadata.get(META_GENERATION, "")
        return int(value) if value.isdigit() else None

    def write_shard(
        self,
        shard: int,
        generation: int,
        header: tuple[str, ...] | None,
        records: Iterable[bytes],
    ) -> None:
        """The records are spooled first (to disk past SPOOL_IN_MEMORY), so the count is
        known before the upload begins and a large shard goes up in parts."""
        key = self.object_key(shard)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="shard-") as spool:
            if self.fmt == "csv":
                if header is None:
                    raise LandingError(
                        f"dataset {self.dataset} shard {shard} generation {generation}: a CSV"
                        f" shard file needs its header row ({key})"
                    )
                spool.write(header_row(header, self.delimiter))
            count = 0
            for record in records:
                spool.write(record)
                spool.write(b"\n")
                count += 1
            size = spool.tell()
            spool.seek(0)
            metadata = {META_GENERATION: str(generation), META_RECORDS: str(count)}
            self._upload(key, spool, size, metadata)

    def content(self, shard: int) -> LandedContent:
        """The records read back from the shard's object (a CSV one less its header row)."""
        key = self.object_key(shard)
        found = LandedContent()
        info = self.store.head(key)
        if info is None:
            found.problems.append(f"shard file {key} is missing")
            return found
        data = self.store.get(key)
        try:
            records = split_stored_records(data, self.framing) if data else []
        except FormatError:
            found.problems.append(f"shard file {key} does not end on a whole record")
            return found
        if self.fmt == "csv":
            records = records[1:]
        for record in records:
            found.digest = add(found.digest, int.from_bytes(record_digest(record)))
        found.count = len(records)
        said = info.metadata.get(META_RECORDS)
        if said is None:
            found.problems.append(f"shard file {key} has no migrator metadata")
        elif said != str(found.count):
            found.problems.append(
                f"shard file {key} holds {found.count:,} records, landed with {said}"
                " (changed behind landing's back)"
            )
        return found

    def _upload(self, key: str, spool: IO[bytes], size: int, metadata: dict[str, str]) -> None:
        store = self.store
        if not isinstance(store, MultipartStore) or size <= store.multipart_threshold:
            store.put(key, spool.read(), metadata)
            return
        part_size = part_length(size, store.part_size or DEFAULT_PART_SIZE)
        upload_id = store.begin_upload(key, metadata)
        try:
            parts: list[PartInfo] = []
            while block := spool.read(part_size):
                parts.append(store.upload_part(key, upload_id, len(parts) + 1, block))
            store.complete_upload(key, upload_id, parts, metadata)
        except BaseException:
            with contextlib.suppress(MigratorError):  # the upload's own failure is reported
                store.abort_upload(key, upload_id)
            raise


def header_row(header: tuple[str, ...], delimiter: str) -> bytes:
    """The CSV header row, each name quoted where the framing would otherwise cut it."""
    fields = []
    for name in header:
        if delimiter in name or any(c in name for c in '"\r\n'):
            name = '"' + name.replace('"', '""') + '"'
        fields.append(name)
    return delimiter.join(fields).encode() + b"\n"

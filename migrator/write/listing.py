"""A generation's file table: the records source as listed once, and what each file costs.

A sync compares the listing with the table of the last routed generation (its base). A file
whose identity (name, size, version: an mtime, ETag or version id) is unchanged is not read
again: its routed digests from the generation that read it stand for what it contributes. New
and changed files are routed in this generation, cut into routing tasks any worker may claim;
the base's files that changed or vanished are retired, and what they contributed leaves the
inventory. Without a base (a bulk copy, or a state store that knows no table) every file is
routed and the shards are diffed whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import xxhash
import zstandard

from migrator.errors import SourceError, StateError
from migrator.objectnames import NAMED_AT_MOST, shown
from migrator.plan.model import Plan
from migrator.repository.names import (
    file_table_path,
    generation_of_routed_dir,
    routed_dir,
    routed_root,
)
from migrator.sources.base import Source, SourceObject
from migrator.state.db import StateDB
from migrator.state.private import write_private
from migrator.write.routed import is_routed

# A routing task: consecutive files to route, up to this many bytes or files.
TASK_BYTES = 32 * 1024 * 1024
TASK_FILES = 256


@dataclass(frozen=True, slots=True)
class TableFile:
    name: str
    size: int
    version: str
    origin: tuple[int, int]  # (generation, slot) of the routed output that holds its digests

    def same_as(self, src: SourceObject) -> bool:
        return (self.size, self.version) == (src.size, src.version)


@dataclass(frozen=True, slots=True)
class FileTable:
    generation: int
    base: int  # the generation whose table this one's changes are against; 0: none
    files: tuple[TableFile, ...]  # the listing, in order
    retired: tuple[TableFile, ...]  # the base's files changed or removed since
    tasks: tuple[tuple[int, ...], ...]  # positions (in files) of those routed in this generation
    listing_digest: str
    routing: str = ""  # the routing settings' signature (routing.routing_signature)

    @property
    def incremental(self) -> bool:
        return self.base != 0

    def routed_here(self) -> list[int]:
        return [p for task in self.tasks for p in task]

    def origins(self) -> list[tuple[int, int]]:
        """Each file's routed output: (generation, slot), in file order."""
        return [f.origin for f in self.files]

    @property
    def version(self) -> str:
        """Tells two listings of one generation apart (a resumed run lists again)."""
        return self.listing_digest[:12]

    def task_bytes(self, task: int) -> int:
        return sum(self.files[p].size for p in self.tasks[task])

    def to_bytes(self) -> bytes:
        def rows(files: Iterable[TableFile]) -> list[list[object]]:
            return [[f.name, f.size, f.version, f.origin[0], f.origin[1]] for f in files]

        doc = {
            "generation": self.generation,
            "base": self.base,
            "files": rows(self.files),
            "retired": rows(self.retired),
            "tasks": self.tasks,
            "listing": self.listing_digest,
            "routing": self.routing,
        }
        return zstandard.ZstdCompressor(level=3).compress(orjson.dumps(doc))

    @classmethod
    def from_bytes(cls, blob: bytes, where: Path) -> FileTable:
        try:
            doc = orjson.loads(zstandard.ZstdDecompressor().decompress(blob))

            def files(rows: list[list[object]]) -> tuple[TableFile, ...]:
                return tuple(
                    TableFile(str(n), int(str(s)), str(v), (int(str(g)), int(str(p))))
                    for n, s, v, g, p in rows
                )

            return cls(
                int(doc["generation"]),
                int(doc["base"]),
                files(doc["files"]),
                files(doc["retired"]),
                tuple(tuple(int(p) for p in task) for task in doc["tasks"]),
                str(doc["listing"]),
                str(doc.get("routing", "")),
            )
        except (
            zstandard.ZstdError,
            orjson.JSONDecodeError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            raise StateError(
                f"{where}: unreadable file table ({exc}); remove it to list again"
            ) from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        write_private(tmp, self.to_bytes())
        os.replace(tmp, path)


def load_table(path: Path) -> FileTable | None:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return FileTable.from_bytes(blob, path)


def refuse_undecodable_names(listing: Iterable[SourceObject], source: Source, dataset: str) -> None:
    """A file name that is not UTF-8 (the OS hands such bytes over as lone surrogates) cannot
    be recorded in the file table, nor named in a dead letter: refused at the listing, every
    such file named, before a byte is read."""
    bad = [src for src in listing if not _utf8(src.name)]
    if not bad:
        return
    named = ", ".join(shown(source.location(src)) for src in bad[:NAMED_AT_MOST])
    more = f" and {len(bad) - NAMED_AT_MOST:,} more" if len(bad) > NAMED_AT_MOST else ""
    raise SourceError(
        f"dataset {dataset}: {len(bad):,} source file name(s) are not valid UTF-8: {named}{more};"
        " rename them (a records dataset's file names only label its records)"
    )


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def last_routed_generation(state: StateDB, dataset: str, before: int | None = None) -> int | None:
    """The last committed generation (before `before`) whose routing completed: the one whose
    file table the next sync compares with (a compaction or rotation routes nothing)."""
    for row in reversed(state.generations(dataset)):
        if (before is not None and row.generation >= before) or not row.committed:
            continue
        cp = state.route_checkpoint(dataset, row.generation)
        if cp is not None and cp.complete:
            return row.generation
    return None


def all_routed(state_dir: Path, dataset: str, table: FileTable) -> bool:
    """Whether every file of the table has its routed output (its index) in place."""
    return all(
        is_routed(routed_dir(state_dir, dataset, f.origin[0]), f.origin[1]) for f in table.files
    )


def listing_digest(listing: Iterable[SourceObject]) -> str:
    h = xxhash.xxh3_128()
    for src in listing:
        h.update(f"{src.name}\0{src.size}\0{src.version}\n".encode())
    return h.hexdigest()


def build_table(
    generation: int,
    listing: list[SourceObject],
    base: FileTable | None,
    routing: str = "",
    *,
    attempt: FileTable | None = None,
    task_bytes: int = TASK_BYTES,
    task_files: int = TASK_FILES,
) -> FileTable:
    """The table of `generation` for this listing: unchanged files of `base` carried over,
    the rest routed here in tasks of about `task_bytes`. `attempt`: this generation's table
    from an interrupted run, whose files still as listed keep the output routed for them."""
    before = {f.name: f for f in base.files} if base is not None else {}
    tried = {f.name: f for f in attempt.files} if attempt is not None else {}
    slots = [f.origin[1] for f in tried.values() if f.origin[0] == generation]
    next_slot = max(slots, default=-1) + 1
    files: list[TableFile] = []
    for src in listing:
        old = before.get(src.name)
        again = tried.get(src.name)
        if old is not None and old.same_as(src):
            files.append(old)
        elif again is not None and again.same_as(src) and again.origin[0] == generation:
            files.append(again)
        else:
            files.append(TableFile(src.name, src.size, src.version, (generation, next_slot)))
            next_slot += 1
    positions = {src.name: i for i, src in enumerate(listing)}
    retired = tuple(
        old
        for old in (base.files if base is not None else ())
        if (i := positions.get(old.name)) is None or files[i].origin != old.origin
    )
    tasks: list[tuple[int, ...]] = []
    batch: list[int] = []
    size = 0
    for position, f in enumerate(files):
        if f.origin[0] != generation:
            continue
        batch.append(position)
        size += f.size
        if size >= task_bytes or len(batch) >= task_files:
            tasks.append(tuple(batch))
            batch, size = [], 0
    if batch:
        tasks.append(tuple(batch))
    return FileTable(
        generation,
        base.generation if base is not None else 0,
        tuple(files),
        retired,
        tuple(tasks),
        listing_digest(listing),
        routing,
    )


def prune_routed(plan: Plan, dataset: str, committed: int) -> None:
    """After generation `committed` of `dataset` is committed: its routed records (and every
    older generation's) are no longer needed; digests, indexes and dead letters are kept only
    for the files of the newest file table at or before it, which the next sync compares with."""
    root = routed_root(plan.state_dir, dataset)
    if not root.is_dir():
        return
    folders = {g: d for d in root.iterdir() if (g := generation_of_routed_dir(d)) is not None}
    tables = [g for g in sorted(folders) if g <= committed and file_table_path(folders[g]).exists()]
    newest = tables[-1] if tables else None
    table = load_table(file_table_path(folders[newest])) if newest is not None else None
    keep = {f.origin for f in table.files} if table is not None else set()
    for g, folder in folders.items():
        if g > committed:
            continue
        for path in folder.iterdir():
            if path.name == file_table_path(folder).name:
                if g != newest:
                    path.unlink(missing_ok=True)
                continue
            stem, _, part = path.name.partition(".")
            position = int(stem[1:]) if stem[:1] == "f" and stem[1:].isdigit() else None
            if position is None:
                continue
            if (g, position) not in keep or part not in _KEPT:
                path.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


_KEPT = ("digests", "index", "dead")  # what a later sync reads of a file it finds unchanged

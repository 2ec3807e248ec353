"""A repair's write-ahead journal: everything it will store, written down before the first put.

A repair changes several objects that must change together (chunks, their manifest, the chain
after it, the generation records) and the state store after them. It seals all of them first
and keeps the sealed bytes in the plan's state_dir; only then does it store them. A repair cut
short is finished by the next one from the journal, byte for byte (no new salt: the very
objects already half stored), so a rerun converges instead of starting another set.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from migrator.errors import StateError
from migrator.state.model import CommittedChunk
from migrator.state.private import private_dir, write_private

JOURNAL_FORMAT = "migrator/repair-journal"
_INDEX = "journal.json"


@dataclass(frozen=True, slots=True)
class JournaledChunk:
    row: CommittedChunk  # what the state store and the ledger record of it, new digests
    key_id: str  # hex fingerprint of the data key that sealed it
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class JournaledObject:
    object_key: str
    kind: str  # "manifest" | "generation"


@dataclass(frozen=True)
class Journal:
    """`generation`: the dataset's newest committed generation when the repair was sealed
    (a journal older than a later generation must not be replayed over it)."""

    dataset: str
    shard: int
    generation: int
    chunks: list[JournaledChunk]
    objects: list[JournaledObject]  # in the order they are stored
    manifests: dict[tuple[int, int], str]
    records: dict[int, str]


def journal_dir(state_dir: Path, dataset: str, shard: int) -> Path:
    return state_dir / "repair" / dataset / f"shard-{shard}"


def write_journal(folder: Path, journal: Journal, blobs: list[bytes]) -> None:
    """The blobs (chunks, then objects, in the journal's order) first, the index last: a
    journal without its index was never begun, and is thrown away."""
    if len(blobs) != len(journal.chunks) + len(journal.objects):
        raise ValueError("one blob a journaled chunk or object")
    clear_journal(folder)
    private_dir(folder)
    for n, blob in enumerate(blobs):
        write_private(folder / f"{n}.bin", blob)
    index = {
        "format": JOURNAL_FORMAT,
        "dataset": journal.dataset,
        "shard": journal.shard,
        "generation": journal.generation,
        "chunks": [
            {"row": asdict(c.row), "key_id": c.key_id, "metadata": c.metadata}
            for c in journal.chunks
        ],
        "objects": [asdict(o) for o in journal.objects],
        "manifests": [[g, s, x] for (g, s), x in sorted(journal.manifests.items())],
        "records": [[g, x] for g, x in sorted(journal.records.items())],
    }
    tmp = folder / f"{_INDEX}.tmp"
    write_private(tmp, orjson.dumps(index))
    os.replace(tmp, folder / _INDEX)


def read_journal(folder: Path) -> tuple[Journal, list[Path]] | None:
    """The journal and its blobs' files, or None (none, or one cut short before its index)."""
    path = folder / _INDEX
    if not path.exists():
        clear_journal(folder)
        return None
    try:
        raw: dict[str, Any] = orjson.loads(path.read_bytes())
        if raw.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        journal = Journal(
            raw["dataset"],
            int(raw["shard"]),
            int(raw["generation"]),
            [
                JournaledChunk(CommittedChunk(**c["row"]), c["key_id"], dict(c["metadata"]))
                for c in raw["chunks"]
            ],
            [JournaledObject(**o) for o in raw["objects"]],
            {(int(g), int(s)): str(x) for g, s, x in raw["manifests"]},
            {int(g): str(x) for g, x in raw["records"]},
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path}: repair journal unreadable ({exc})") from None
    files = [folder / f"{n}.bin" for n in range(len(journal.chunks) + len(journal.objects))]
    if missing := [f for f in files if not f.exists()]:
        raise StateError(f"{path}: repair journal is missing {missing[0].name}")
    return journal, files


def clear_journal(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)

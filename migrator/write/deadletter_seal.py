"""After routing: a generation's dead-letter spool sealed and stored at the destination, once.

A marker under state_dir records that it was stored, and how many records it holds, so a
resumed run stores the set once and `run` and `status` can say how many records were set aside.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from migrator.codec.chunk import ChunkEncoder
from migrator.keys.datakey import DataKey
from migrator.plan.model import DatasetPlan, Plan
from migrator.repository.dead_letters import SetTotals, put_chunk, seal_chunk
from migrator.repository.names import (
    dead_letter_marker,
    dead_letter_markers,
    dead_letter_spool_path,
)
from migrator.state.private import write_private
from migrator.stores.base import ObjectStore
from migrator.write.deadletter import data_lengths, iter_spool


def store_dead_letters(
    plan: Plan,
    ds: DatasetPlan,
    generation: int,
    key: DataKey,
    store: ObjectStore,
    spool_dir: Path,
    csv_header: bytes | None,
) -> int:
    """Once a generation is routed: seal its quarantined records with the dataset's data key
    and store them in the dead-letter area; returns how many there are. A dataset that
    quarantines stores a (possibly empty) set for every generation it routes, so the latest set
    is the source's bad records as of the latest routing. Done once per generation."""
    marker = dead_letter_marker(plan.state_dir, ds.name, generation)
    if marker.exists():
        return int(orjson.loads(marker.read_bytes())["records"])
    spool = dead_letter_spool_path(spool_dir)
    if not spool.exists() and ds.on_bad_record != "quarantine":
        return 0

    # Chunk boundaries first, so every chunk can state how many there are: from the entries'
    # headers alone (their lengths), no record is read for it.
    counts: list[int] = []
    size = 0
    for data_len in data_lengths(spool) if spool.exists() else ():
        if not counts or size >= plan.chunk_size:
            counts.append(0)
            size = 0
        counts[-1] += 1
        size += data_len
    counts = counts or [0]
    total = sum(counts)
    header = None if csv_header is None else csv_header.decode("utf-8", "surrogateescape")
    totals = SetTotals(len(counts), total, header)
    encoder = ChunkEncoder(plan.compression_level)
    letters = iter_spool(spool) if spool.exists() else iter(())

    def seal(sequence: int) -> bytes:
        return seal_chunk(
            encoder,
            key,
            plan=plan.name,
            dataset=ds.name,
            generation=generation,
            sequence=sequence,
            totals=totals,
            letters=[next(letters) for _ in range(counts[sequence])],
        )

    first = seal(0)  # stored last: a set whose first chunk exists is whole
    for sequence in range(1, len(counts)):
        put_chunk(store, plan.name, ds.name, generation, sequence, seal(sequence))
    put_chunk(store, plan.name, ds.name, generation, 0, first)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    write_private(tmp, orjson.dumps({"records": total, "chunks": len(counts)}))
    os.replace(tmp, marker)
    return total


def dead_letter_counts(state_dir: Path, dataset: str) -> dict[int, int]:
    """Records quarantined per generation, as this state directory stored them."""
    folder = dead_letter_markers(state_dir, dataset)
    counts: dict[int, int] = {}
    for path in sorted(folder.glob("g*.json")) if folder.is_dir() else ():
        if path.stem[1:].isdigit():
            counts[int(path.stem[1:])] = int(orjson.loads(path.read_bytes())["records"])
    return counts

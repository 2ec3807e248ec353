"""One shard's own numbers in one generation, from the state store: what a Dagster partition
reports when its run wrote several shards (the run's report holds only their sums), and where
its newest manifest is, from the same read of the shards' heads."""

from __future__ import annotations

from dataclasses import dataclass

from migrator.plan.kinds import DatasetKind
from migrator.repository.names import manifest_key
from migrator.state.db import StateDB
from migrator.state.tables.moved import objects_by_shard
from migrator.write.generation import BULK_GENERATION


@dataclass(frozen=True, slots=True)
class ShardNumbers:
    shard: int
    generation: int
    status: str  # the shard's status in that generation (complete, running, ...)
    chunks: int  # chunks the generation wrote for the shard
    records: int  # records it wrote (records datasets)
    objects: int  # objects it wrote (objects datasets)
    bytes_in: int
    bytes_stored: int
    live_records: int  # records the shard holds after its newest stored manifest
    tombstones: int  # records datasets: records the generation removed or replaced here
    wrote_manifest: bool  # the generation stored a manifest of the shard (a change, deletes too)
    manifest_key: str  # the shard's newest stored manifest; before one, the bulk generation's


def shard_numbers(
    state: StateDB, dataset: str, kind: DatasetKind, generation: int, shards: list[int]
) -> dict[int, ShardNumbers]:
    """Shards the generation never touched (unchanged in a sync) report zeros."""
    wanted = set(shards)
    progress = {p.shard: p for p in state.shard_progress(dataset, generation) if p.shard in wanted}
    heads = state.latest_heads(dataset)
    objects_of: dict[int, int] = {}
    if kind is DatasetKind.OBJECTS:  # first parts, by the index: no name opened, no key needed
        with state.engine.connect() as conn:
            objects_of = objects_by_shard(conn, dataset, generation, shards)
    out = {}
    for shard in shards:
        p = progress.get(shard)
        head = heads.get(shard)
        objects = objects_of.get(shard, 0)
        mine = head is not None and head.generation == generation
        out[shard] = ShardNumbers(
            shard,
            generation,
            str(p.status) if p is not None else "unchanged",
            p.chunks if p is not None else 0,
            p.records if p is not None and kind is DatasetKind.RECORDS else 0,
            objects,
            p.plain_bytes if p is not None else 0,
            p.stored_bytes if p is not None else 0,
            head.live_records if head is not None else 0,
            head.removed_records if mine and head is not None else 0,
            mine,
            head.manifest_key
            if head is not None
            else manifest_key(dataset, BULK_GENERATION, shard),
        )
    return out

"""Opening a dataset's generation to work in, and committing it with its generation record.

The first run of a dataset is its bulk copy (generation 1); each later run is an incremental
sync in a new generation. A generation becomes visible to restore when its record is stored,
after every shard of it is complete; its spools (routed plaintext) are then removed.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

import xxhash

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.generation import GenerationKind, GenerationRecord, ShardHead, seal_record
from migrator.errors import StateError, UsageError
from migrator.keys.datakey import DataKey
from migrator.plan.kinds import DatasetKind
from migrator.plan.model import DatasetPlan, Plan
from migrator.repository.generations import put_record
from migrator.repository.names import spool_dir, spools_root
from migrator.state.db import StateDB
from migrator.state.model import GenerationRow, ShardStatus
from migrator.stores.base import ObjectStore
from migrator.write.listing import prune_routed

BULK_GENERATION = 1  # the first run of a dataset; every later run is a sync generation


def working_generation(
    plan: Plan, state: StateDB, ds: DatasetPlan, cohort_since: float | None = None
) -> GenerationRow:
    """The open generation to work in: the bulk at first, later a new sync each time the last
    one is committed. Parallel shard runs join the same open generation. A worker (its process
    started at `cohort_since`) joins the open one, or finds the generation of the workers
    started with it committed already and opens no other: then that committed row is returned.
    """
    with state.lock(f"{ds.name}.generation"):
        latest = state.latest_generation(ds.name)
        if latest is None:
            return state.open_generation(ds.name, BULK_GENERATION, GenerationKind.BULK)
        if latest.committed:
            # A crash between the commit and the clean-up left its plaintext spools.
            remove_spools(plan, ds.name, upto=latest.generation)
            if cohort_since is not None and latest.started_at >= cohort_since:
                return latest
            return state.open_generation(ds.name, latest.generation + 1, GenerationKind.SYNC)
        if latest.kind is GenerationKind.COMPACT:
            raise UsageError(
                f"dataset {ds.name}: compaction into generation {latest.generation} was"
                " interrupted; run `migrator compact` to finish it before syncing"
            )
        return latest


def commit_generation(
    plan: Plan, ds: DatasetPlan, gen: int, store: ObjectStore, state: StateDB, key: DataKey
) -> bool:
    """The generation record from the state store's shard heads (callers hold the lock)."""
    rows = {g.generation: g for g in state.generations(ds.name)}
    row = rows.get(gen)
    if row is None:
        return False
    spool = spool_dir(plan.state_dir, ds.name, gen)
    if row.committed:
        shutil.rmtree(spool, ignore_errors=True)  # a crash may have come between the two
        prune_routed(plan, ds.name, gen)
        return True
    progress = {p.shard: p for p in state.shard_progress(ds.name, gen)}
    if any(
        (p := progress.get(s)) is None or p.status is not ShardStatus.COMPLETE
        for s in range(ds.shards)
    ):
        return False
    heads: list[ShardHead] = []
    changed_records = changed_bytes = 0
    all_heads = state.all_shard_heads(ds.name)
    for shard in range(ds.shards):
        stored = [h for h in all_heads.get(shard, []) if h.generation <= gen]
        if not stored:
            raise StateError(f"dataset {ds.name} shard {shard}: complete without any manifest")
        base = max(i for i, h in enumerate(stored) if h.base)
        chain = stored[base:]
        last = chain[-1]
        heads.append(
            ShardHead(
                shard,
                tuple(h.generation for h in chain),
                last.manifest_xxh3,
                last.live_records if ds.kind is DatasetKind.RECORDS else 0,
                last.digest,
            )
        )
        if last.generation == gen:
            changed_records += progress[shard].records + last.removed_records
            changed_bytes += progress[shard].plain_bytes
    earlier = [g for g in rows.values() if g.committed and g.generation < gen]
    previous = earlier[-1] if earlier else None
    finished = time.time()
    record = GenerationRecord(
        plan=plan.name,
        dataset=ds.name,
        generation=gen,
        kind=row.kind,
        started_at=_iso(row.started_at),
        finished_at=_iso(finished),
        seconds=round(finished - row.started_at, 3),
        previous=previous.generation if previous else 0,
        previous_xxh3=previous.record_xxh3 if previous else None,
        changed_records=changed_records,
        changed_bytes=changed_bytes,
        shards=tuple(heads),
    )
    sealed = seal_record(record, key, ChunkEncoder(plan.compression_level))
    put_record(store, ds.name, gen, sealed)
    state.commit_generation(
        ds.name,
        gen,
        changed_records=changed_records,
        changed_bytes=changed_bytes,
        record_xxh3=xxhash.xxh3_128_hexdigest(sealed),
        finished_at=finished,
    )
    state.prune_all_inventories(ds.name, gen + 1)
    shutil.rmtree(spool, ignore_errors=True)
    prune_routed(plan, ds.name, gen)
    return True


def refuse_while_repairing(state: StateDB, dataset: str) -> None:
    """A repair cut short may have stored part of its re-sealed chain: a sync or compaction
    built on the state store's digests now would link to manifests no longer stored."""
    pending = state.pending_repairs(dataset)
    if pending:
        shards = ", ".join(str(s) for s in sorted(pending))
        raise UsageError(
            f"dataset {dataset}: a repair of shard(s) {shards} was cut short; finish it first"
            f" with `migrator repair PLAN --dataset {dataset}` (on the machine that ran it: its"
            " journal is in that state_dir), then run again"
        )


def remove_spools(plan: Plan, dataset: str, *, upto: int) -> None:
    """Remove the spools (routed plaintext) of generations up to `upto`, all committed."""
    prune_routed(plan, dataset, upto)
    root = spools_root(plan.state_dir, dataset)
    if not root.is_dir():
        return
    for folder in root.iterdir():
        number = folder.name[1:]
        if folder.name[:1] == "g" and number.isdigit() and int(number) <= upto:
            shutil.rmtree(folder, ignore_errors=True)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

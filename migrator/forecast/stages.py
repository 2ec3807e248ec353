"""A run's stages at scale, and what a sync costs: pure arithmetic, no I/O.

A generation lists its source once, by one worker on several listing threads (the other workers
read the file table it wrote). Routing is a stage of tasks every worker claims, so W workers
route W times as fast; encoding spreads over shards the same way. A sync costs what changed:
the whole source listed again (to see what changed), the changed files read and routed, the
inventories of the shards they touch rewritten, the changed records or objects encoded and
uploaded, a fixed cost per changed shard (its delta chunk, manifest and commit) and a fixed
cost per sync (keys, ledger, generation record; the untouched shards complete together, in one
transaction). The final sync inside the write freeze is a sync of the change since the last
one, followed by the cutover gate, which lists the source once more and reads no unchanged file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from migrator.codec.digests import DIGEST_ENTRY
from migrator.plan.kinds import DatasetKind, StoreKind
from migrator.sizes import MiB
from migrator.sources.listing import LISTING_WORKERS

# What the forecast assumes where it measures nothing; every figure says which it is.
LIST_KEYS_PER_REQUEST = 1000  # S3 ListObjectsV2 returns up to 1,000 keys a page
LIST_REQUEST_SECONDS = 0.2  # an assumed round trip of one list request, page included
CLOUD_LISTING_RATE = LIST_KEYS_PER_REQUEST / LIST_REQUEST_SECONDS  # names a second a thread
LOCAL_LISTING_RATE = 50_000.0  # a folder walk, a stat a file: names a second a thread
ASSUMED_FILE_BYTES = 64 * MiB  # a file's mean size when neither listed nor expected_files
ASSUMED_RECORD_BYTES = 1000.0  # a record's mean size, where no run counted them
OBJECT_ENTRY_BYTES = 100  # an object's inventory entry: its name, version and size
# A shard's inventory unpacked, the changed files' entries swapped, digested and packed again:
# ~67 MB/s of inventory on one core of the reference machine; less, for the state store's write.
INVENTORY_RATE = 50e6
# A changed shard's fixed cost on its worker: a delta chunk and a manifest stored (a request
# each, ~50 ms to a cloud store) and its commit (batched with others).
CHANGED_SHARD_SECONDS = 0.1
SYNC_FIXED_SECONDS = 2.0  # a sync's own cost a dataset: keyring, ledger, generation record


@dataclass(frozen=True, slots=True)
class Figure:
    """A rate or cost the forecast uses, and whether it was measured here or assumed."""

    name: str
    value: float
    unit: str  # "B/s", "names/s", "s", "B", "files"
    how: Literal["measured", "given", "assumed"]
    basis: str  # how it was measured, or what the assumption rests on


def assumed_files(source_bytes: int) -> int:
    return max(1, math.ceil(source_bytes / ASSUMED_FILE_BYTES)) if source_bytes else 0


def listing_figure(name: str, kind: StoreKind | str) -> Figure:
    """Names a second one thread lists from a source of this kind, where none was timed."""
    if kind == StoreKind.LOCAL:
        return Figure(name, LOCAL_LISTING_RATE, "names/s", "assumed", "a folder walk")
    basis = f"{LIST_KEYS_PER_REQUEST:,} keys a list request, {LIST_REQUEST_SECONDS:g} s a request"
    return Figure(name, CLOUD_LISTING_RATE, "names/s", "assumed", basis)


@dataclass(frozen=True, slots=True)
class FixedCosts:
    """The costs every dataset shares: listing threads, inventories, per shard, per sync."""

    listing_threads: int = LISTING_WORKERS
    inventory_rate: float = INVENTORY_RATE  # inventory bytes a second one worker rewrites
    changed_shard_seconds: float = CHANGED_SHARD_SECONDS
    sync_seconds: float = SYNC_FIXED_SECONDS  # per dataset and sync


@dataclass(frozen=True, slots=True)
class DatasetWork:
    """One dataset as the stages see it, with one worker's rates for it."""

    name: str
    kind: DatasetKind
    source_bytes: int
    stored_bytes: int
    files: int
    shards: int
    routing_rate: float  # records: source bytes a second one worker routes; objects: 0
    encoding_rate: float  # bytes a second one worker encodes and stores (after routing)
    listing_rate: float  # names a second one listing thread gets
    record_bytes: float = ASSUMED_RECORD_BYTES

    @property
    def compression(self) -> float:
        return self.source_bytes / self.stored_bytes if self.stored_bytes else 1.0


@dataclass(frozen=True, slots=True)
class Upload:
    """What bounds uploads besides the workers: each one's cap, and the link they share."""

    cap: int | None = None  # bytes a second, each worker's bandwidth_limit
    link: int | None = None  # bytes a second into the destination, all workers together

    def seconds(self, stored: float, workers: int) -> float:
        capped = stored / (workers * self.cap) if self.cap else 0.0
        return max(capped, stored / self.link if self.link else 0.0)


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Seconds a stage or a sync takes, by part, at some number of workers."""

    listing: float = 0.0
    routing: float = 0.0
    inventories: float = 0.0
    encoding: float = 0.0  # encoding and upload: the workers', their caps' or the link's pace
    shards: float = 0.0  # the changed shards' fixed costs
    fixed: float = 0.0  # the sync's own
    gate: float = 0.0  # the cutover gate's listing
    changed_bytes: int = 0
    changed_shards: int = 0

    @property
    def seconds(self) -> float:
        return (
            self.listing
            + self.routing
            + self.inventories
            + self.encoding
            + self.shards
            + self.fixed
            + self.gate
        )

    def __add__(self, other: StageTimes) -> StageTimes:
        return StageTimes(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(StageTimes))
        )

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {f.name: getattr(self, f.name) for f in fields(StageTimes)}
        out["seconds"] = self.seconds
        return out


def listing_seconds(d: DatasetWork, costs: FixedCosts) -> float:
    """One listing of the whole source, by one worker's listing threads."""
    if not d.files or not d.listing_rate:
        return 0.0
    return d.files / (costs.listing_threads * d.listing_rate)


def changed_shards(items: float, shards: int) -> int:
    """Shards that `items` changes hashed evenly over `shards` touch, expected: few changes
    touch as many shards, many touch all."""
    if items <= 0 or shards < 1:
        return 0
    if shards == 1:
        return 1
    return min(shards, math.ceil(-shards * math.expm1(items * math.log1p(-1 / shards))))


def bulk(d: DatasetWork, workers: int, costs: FixedCosts, upload: Upload) -> StageTimes:
    """The first generation: one listing, then every byte routed (records) and encoded."""
    routing = d.source_bytes / (workers * d.routing_rate) if d.routing_rate else 0.0
    encoding = d.source_bytes / (workers * d.encoding_rate) if d.encoding_rate else 0.0
    encoding = max(encoding, upload.seconds(d.stored_bytes, workers))
    return StageTimes(
        listing=listing_seconds(d, costs),
        routing=routing,
        encoding=encoding,
        changed_bytes=d.source_bytes,
        changed_shards=d.shards,
    )


def sync(
    d: DatasetWork, workers: int, change: float, costs: FixedCosts, upload: Upload
) -> StageTimes:
    """A sync after `change` of the source's bytes (in new or changed files) changed.

    Records: the changed files are routed; every record in them is counted as encoded again, an
    upper bound (a changed file's unchanged records are routed, not written). Objects: the
    changed objects are read and sent; every shard's inventory is read to diff the listing."""
    changed = change * d.source_bytes
    if d.kind is DatasetKind.RECORDS:
        records = d.source_bytes / d.record_bytes if d.record_bytes else 0.0
        touched = changed_shards(changed / d.record_bytes if d.record_bytes else 0.0, d.shards)
        inventory = touched * records / max(1, d.shards) * DIGEST_ENTRY.size
        routing = changed / (workers * d.routing_rate) if d.routing_rate else 0.0
    else:
        touched = changed_shards(change * d.files, d.shards)
        inventory = d.files * OBJECT_ENTRY_BYTES
        routing = 0.0
    encoding = changed / (workers * d.encoding_rate) if d.encoding_rate else 0.0
    encoding = max(encoding, upload.seconds(changed / d.compression, workers))
    return StageTimes(
        listing=listing_seconds(d, costs),
        routing=routing,
        inventories=inventory / (workers * costs.inventory_rate),
        encoding=encoding,
        shards=touched * costs.changed_shard_seconds / workers,
        fixed=costs.sync_seconds,
        changed_bytes=round(changed),
        changed_shards=touched,
    )


def freeze(
    d: DatasetWork, workers: int, change: float, costs: FixedCosts, upload: Upload
) -> StageTimes:
    """The write freeze: the final sync of `change` since the last sync, then the cutover gate
    (one more listing; the final sync's routed digests stand for the changed files)."""
    final = sync(d, workers, change, costs, upload)
    return final + StageTimes(gate=listing_seconds(d, costs))


def cost_figures(costs: FixedCosts, *, sync_measured: bool, records: bool) -> list[Figure]:
    """The costs of a sync beyond the stages' rates."""
    out = []
    if records:
        out.append(
            Figure(
                "a record's mean size",
                ASSUMED_RECORD_BYTES,
                "B",
                "assumed",
                "sizes the inventories (40 B a record) and the shards a change touches",
            )
        )
    out += [
        Figure(
            "rewriting a shard's inventory, one worker",
            costs.inventory_rate,
            "B/s",
            "assumed",
            "~67 MB/s on one core of the reference machine, less the state store's write",
        ),
        Figure(
            "a changed shard's fixed cost",
            costs.changed_shard_seconds,
            "s",
            "assumed",
            "a delta chunk and a manifest stored, ~50 ms a request; commits batched",
        ),
        Figure(
            "a sync's fixed cost, a dataset",
            costs.sync_seconds,
            "s",
            "measured" if sync_measured else "assumed",
            "a records sync of that sample with nothing changed, local to local"
            if sync_measured
            else "keyring, ledger, generation record: a few requests",
        ),
    ]
    return out

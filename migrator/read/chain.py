"""A shard's chain of generations at the destination: find it, authenticate it, apply it.

Restore, verify, compaction and the cutover gate all read a dataset the same way: the latest
generation record (or a chosen one) names each shard's chain, base first; every manifest of the
chain must link to the one before it by generation and stored digest, and its digest must be
the previous one plus what it added minus what it removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from migrator.codec.digests import ObjectEntry, add, from_hex, key_hash, sub
from migrator.codec.generation import ShardHead
from migrator.codec.manifest import ChunkRef, RecordsLayout, ShardManifest
from migrator.errors import SourceError, TamperedError, UsageError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring
from migrator.plan.model import DatasetKind, DatasetPlan
from migrator.records.framing import RecordFraming, split_stored_records, stored_framing
from migrator.records.keys import CsvKeyReader, JsonKeyReader
from migrator.repository.generations import latest_record
from migrator.repository.manifests import StoredManifest, load_manifest
from migrator.repository.names import manifest_key
from migrator.stores.base import ObjectStore


def check_links(chain: Sequence[StoredManifest]) -> None:
    """Base first, each delta naming the one before by generation and stored digest, and each
    digest following from the one before: a dropped, swapped or replayed manifest fails."""
    previous: StoredManifest | None = None
    for link in chain:
        m = link.manifest
        if previous is None:
            if not m.is_base:
                raise TamperedError(
                    f"chain of shard {m.shard} starts at a delta (follows generation {m.previous})",
                    object_key=link.object_key,
                )
            expected = from_hex(m.added_digest)
        else:
            p = previous.manifest
            if m.is_base or m.previous != p.generation or m.previous_xxh3 != previous.stored_xxh3:
                raise TamperedError(
                    f"manifest does not follow generation {p.generation} of its shard",
                    object_key=link.object_key,
                )
            expected = add(
                sub(from_hex(p.digest), from_hex(m.removed_digest)), from_hex(m.added_digest)
            )
        if from_hex(m.digest) != expected:
            raise TamperedError(
                "manifest digest is not its previous digest plus additions minus removals",
                object_key=link.object_key,
            )
        previous = link


def load_chain(
    store: ObjectStore,
    plan: str,
    dataset: str,
    shard: int,
    generations: Sequence[int],
    key: DataKey | Keyring,
    head_xxh3: str | None = None,
) -> list[StoredManifest]:
    chain = [load_manifest(store, plan, dataset, g, shard, key) for g in generations]
    check_links(chain)
    if head_xxh3 is not None and chain and chain[-1].stored_xxh3 != head_xxh3:
        raise TamperedError(
            "head manifest is not the one the generation record names",
            object_key=chain[-1].object_key,
        )
    return chain


def head_chain(
    store: ObjectStore, plan: str, dataset: str, head: ShardHead, key: DataKey | Keyring
) -> list[StoredManifest]:
    """The chain a generation record names for one shard, bound to its head manifest."""
    return load_chain(store, plan, dataset, head.shard, head.chain, key, head.head_xxh3)


def follow_chain(
    store: ObjectStore,
    plan: str,
    dataset: str,
    shard: int,
    head: int,
    key: DataKey | Keyring,
    head_xxh3: str | None = None,
) -> list[StoredManifest]:
    """From a head manifest back to its base by the `previous` links (no record needed);
    `head_xxh3`: the stored digest the head manifest must have (the state store's)."""
    links = [load_manifest(store, plan, dataset, head, shard, key)]
    if head_xxh3 is not None and links[0].stored_xxh3 != head_xxh3:
        raise TamperedError(
            "manifest is not the one the state store committed (a stale or replayed copy)",
            object_key=links[0].object_key,
        )
    while not links[-1].manifest.is_base:
        links.append(load_manifest(store, plan, dataset, links[-1].manifest.previous, shard, key))
    links.reverse()
    check_links(links)
    return links


def live_records(chain: Sequence[StoredManifest]) -> int:
    return sum(m.manifest.record_count - m.manifest.removed_records for m in chain)


def live_objects(chain: Sequence[ShardManifest]) -> int:
    """The objects a shard holds after its chain: each name some manifest lists and no later
    one removes or rewrites."""
    return len(
        {
            ref.name
            for m, dead in zip(chain, superseded(chain), strict=True)
            for ref in m.chunks
            if ref.name not in dead
        }
    )


def superseded(chain: Sequence[ShardManifest]) -> list[set[str]]:
    """For each manifest of the chain, what later ones remove or rewrite: record key hashes
    (hex) or object names. An entry of manifest i is live unless it is in superseded[i]."""
    out: list[set[str]] = []
    later: set[str] = set()
    for m in reversed(chain):
        out.append(set(later))
        later.update(m.removed)
        if m.kind == DatasetKind.OBJECTS:
            later.update(ref.name for ref in m.chunks if ref.name is not None)
    out.reverse()
    return out


def listed_objects(refs: Iterable[ChunkRef]) -> dict[str, ObjectEntry]:
    """Each object the parts belong to, with its version and size (the sum of its parts)."""
    sizes: dict[str, int] = {}
    versions: dict[str, str] = {}
    for ref in refs:
        name = ref.name or ""
        sizes[name] = sizes.get(name, 0) + ref.plain_size
        versions[name] = ref.version or ""
    return {name: ObjectEntry(versions[name], size) for name, size in sizes.items()}


def live_parts(manifest: ShardManifest, dead: set[str]) -> list[ChunkRef]:
    return [ref for ref in manifest.chunks if ref.name not in dead]


def plan_layout(ds: DatasetPlan) -> RecordsLayout:
    """The records layout a writer records in each manifest of a records dataset."""
    records = ds.records
    delimiter = records.csv_delimiter if records.format == "csv" else None
    return RecordsLayout(records.format, records.key, delimiter)


def chain_layout(ds: DatasetPlan, chain: Sequence[ShardManifest]) -> RecordsLayout:
    """How the chain's records are framed and keyed: as its manifests record it (version 3),
    the same in every one, else (version-2 manifests record none) as the plan says."""
    found: RecordsLayout | None = None
    for m in chain:
        if m.records_layout is None:
            continue
        if found is not None and m.records_layout != found:
            raise TamperedError(
                "manifest records another record layout than the one before it in its chain",
                object_key=manifest_key(m.dataset, m.generation, m.shard),
            )
        found = m.records_layout
    return found or plan_layout(ds)


def check_plan_layout(ds: DatasetPlan, chain: Sequence[ShardManifest]) -> None:
    """A writer extends or folds a chain only under the layout it was written with: key hashes
    taken under another key field or delimiter would not match the ones it removes."""
    recorded, planned = chain_layout(ds, chain), plan_layout(ds)
    for field in ("format", "key", "csv_delimiter"):
        was, now = getattr(recorded, field), getattr(planned, field)
        if was != now:
            raise UsageError(
                f"dataset {ds.name}: {field} is {now!r} in the plan, but the destination's"
                f" generations were written with {was!r}; a changed {field} needs a new"
                " dataset, not a sync"
            )


def check_destination_layout(
    store: ObjectStore, plan: str, ds: DatasetPlan, key: DataKey | Keyring
) -> None:
    """Before a sync: the plan frames and keys records as the newest generation recorded (one
    head manifest stands for all: a writer never lets them differ)."""
    record = latest_record(store, plan, ds.name, key)
    if record is None or not record.shards:
        return
    head = record.shards[0]
    check_plan_layout(ds, [load_manifest(store, plan, ds.name, head.head, 0, key).manifest])


class RecordKeys:
    """Key hashes of records read back, to drop those a later generation removed."""

    def __init__(self, ds: DatasetPlan, chain: Sequence[ShardManifest]) -> None:
        layout = chain_layout(ds, chain)
        self.is_csv = layout.format == "csv"
        self.framing = stored_framing(layout.csv_delimiter if self.is_csv else None)
        self.where = f"dataset {ds.name}"
        if self.is_csv:
            csv_header = csv_header_of(chain)
            if csv_header is None or layout.csv_delimiter is None:
                raise TamperedError(f"{self.where}: CSV manifest without its header")
            header = csv_header.encode("utf-8", "surrogateescape")
            self.csv = CsvKeyReader(layout.key, header, layout.csv_delimiter, self.where)
        else:
            self.json = JsonKeyReader(layout.key)

    def key(self, record: bytes) -> bytes:
        """The record's key; a record read back without one was not written by migrator."""
        try:
            if self.is_csv:
                return self.csv.key(record, self.where, 0)
            return self.json.key(record, self.where, 0)
        except SourceError as exc:
            raise TamperedError(f"a restored record has no readable key ({exc})") from None

    def hash(self, record: bytes) -> bytes:
        return key_hash(self.key(record))

    def hash_hex(self, record: bytes) -> str:
        return self.hash(record).hex()


def chain_framing(ds: DatasetPlan, chain: Sequence[ShardManifest]) -> RecordFraming:
    """How the chain's records chunks are framed: by the layout its manifests record."""
    layout = chain_layout(ds, chain)
    return stored_framing(layout.csv_delimiter if layout.format == "csv" else None)


def live_record_blocks(
    chain: Sequence[ShardManifest],
    read: Callable[[ShardManifest, list[ChunkRef]], Iterable[bytes]],
    keys: RecordKeys | None,
) -> Iterator[bytes]:
    """The shard's live records, base first, each ended by a line feed: whole chunks where no
    later generation removed anything, else the records whose key hash survives.

    `read(manifest, refs)` yields the plaintext of those chunks in order."""
    for manifest, gone in zip(chain, superseded(chain), strict=True):
        refs = sorted(manifest.chunks, key=lambda r: r.sequence)
        for ref, data in zip(refs, read(manifest, refs), strict=True):
            if not gone:
                yield data
                continue
            if keys is None:
                raise ValueError("a chain with removals needs the dataset's record keys")
            yield b"".join(
                record + b"\n"
                for record in split_stored_records(data, keys.framing, ref.records)
                if keys.hash_hex(record) not in gone
            )


def csv_header_of(chain: Sequence[ShardManifest]) -> str | None:
    """The CSV header row the chain's records belong under: one for the whole chain."""
    found: str | None = None
    for m in chain:
        header = m.extra.get("csv_header")
        if not isinstance(header, str):
            continue
        if found is not None and header != found:
            raise TamperedError(
                "manifest names another CSV header than the one before it in its chain",
                object_key=manifest_key(m.dataset, m.generation, m.shard),
            )
        found = header
    return found

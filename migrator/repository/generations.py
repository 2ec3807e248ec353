"""Generation records at the destination: list, store and open them.

A generation record commits a dataset's generation: stored last, it names each shard's head.
"""

from __future__ import annotations

from migrator.codec.generation import GenerationRecord, open_record
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import Keyring
from migrator.repository.names import generation_key, generation_of_key, generations_prefix
from migrator.repository.sealed import open_stored, put_sealed
from migrator.stores.base import ObjectStore


def put_record(store: ObjectStore, dataset: str, generation: int, sealed: bytes) -> str:
    """Store a sealed record: the generation's commit point. Returns its object key."""
    return put_sealed(store, generation_key(dataset, generation), sealed, "generation")


def get_record_bytes(store: ObjectStore, dataset: str, generation: int) -> bytes:
    """The stored bytes of a record, unopened: what a head file pins by digest."""
    return store.get(generation_key(dataset, generation))


def record_generations(store: ObjectStore, dataset: str) -> list[int]:
    """Generations with a record at the destination, oldest first."""
    gens = (generation_of_key(o.key) for o in store.list(generations_prefix(dataset)))
    return sorted(g for g in gens if g is not None)


def load_record(
    store: ObjectStore, plan: str, dataset: str, generation: int, key: DataKey | Keyring
) -> tuple[GenerationRecord, str]:
    """The record and the xxh3-128 of its stored bytes."""
    okey = generation_key(dataset, generation)

    def opened(data: bytes, data_key: DataKey) -> GenerationRecord:
        return open_record(
            data, plan=plan, dataset=dataset, generation=generation, key=data_key, object_key=okey
        )

    return open_stored(store, okey, key, opened)


def latest_record(
    store: ObjectStore, plan: str, dataset: str, key: DataKey | Keyring, at_most: int | None = None
) -> GenerationRecord | None:
    """The newest record (at or before `at_most`), or None before the first run finished."""
    gens = [g for g in record_generations(store, dataset) if at_most is None or g <= at_most]
    if not gens:
        return None
    return load_record(store, plan, dataset, gens[-1], key)[0]


def delete_record(store: ObjectStore, dataset: str, generation: int) -> None:
    """Remove a record a newer compaction made obsolete (it names manifests deleted since)."""
    store.delete(generation_key(dataset, generation))

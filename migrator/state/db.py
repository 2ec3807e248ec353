"""The state store: SQLite in the plan's state_dir by default, PostgreSQL where many workers
share one plan. One schema (schema.py), moved forward by migrations (migrate.py).

It is a fast index of the destination, never the only truth: verify and restore read manifests,
and `migrator state rebuild` makes it anew from them.

StateDB is the one object the rest of migrator holds; each of its methods is done by the module
of its aggregate (tables/), all of them sharing one Backend (backend.py: connections,
transactions, locks) and the sealers of the datasets whose key is bound (sealed.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import Engine

from migrator.keys.datakey import DataKey
from migrator.state.backend import Backend
from migrator.state.leases import Fence, Lease
from migrator.state.model import (
    CommittedChunk,
    GenerationRow,
    LedgerHead,
    LedgerMove,
    RouteCheckpoint,
    ShardHeadRow,
    ShardProgress,
    ShardStatus,
    UploadEntry,
)
from migrator.state.sealed import DatasetSealers
from migrator.state.tables.chunks import ChunkTable
from migrator.state.tables.generations import GenerationTable
from migrator.state.tables.leases import LeaseTable
from migrator.state.tables.ledger import LedgerHeadTable
from migrator.state.tables.meta import MetaTable
from migrator.state.tables.routes import RouteTable
from migrator.state.tables.shards import ShardTable
from migrator.state.tables.uploads import UploadJournal
from migrator.state.urls import STATE_URL_ENV, describe_url, state_url_for

__all__ = ["STATE_URL_ENV", "Fence", "StateDB", "describe_url", "state_url_for"]


class StateDB:
    """Thread-safe: each thread works on its own pooled connection (upload workers journal
    multipart uploads while the coordinating thread commits chunks)."""

    def __init__(self, url: str) -> None:
        self._backend = backend = Backend(url)
        sealers = DatasetSealers()
        self._meta = MetaTable(backend, sealers)
        self._leases = LeaseTable(backend)
        self._ledger = LedgerHeadTable(backend)
        self._chunks = ChunkTable(backend, sealers, self._leases, self._ledger)
        self._shards = ShardTable(backend, sealers, self._leases, self._ledger)
        self._routes = RouteTable(backend, sealers)
        self._generations = GenerationTable(backend)
        self._uploads = UploadJournal(backend, sealers)

    @classmethod
    def sqlite_file(cls, path: Path) -> StateDB:
        return cls(f"sqlite:///{path}")

    @property
    def url(self) -> str:
        return self._backend.url

    @property
    def path(self) -> str:
        """How messages name the store: its file, or its URL without a password."""
        return self._backend.path

    @property
    def dialect(self) -> str:
        return self._backend.dialect

    @property
    def engine(self) -> Engine:
        return self._backend.engine

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateDB({self.path})"

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._backend.lock(name)

    # --- meta: the plan served, dataset keys (tables/meta.py) ----------------------------

    def get_meta(self, key: str) -> str | None:
        return self._meta.get_meta(key)

    def claim_for_plan(self, plan: str) -> None:
        self._meta.claim_for_plan(plan)

    def bind_dataset_key(self, dataset: str, first: DataKey) -> None:
        self._meta.bind_dataset_key(dataset, first)

    # --- shard leases (tables/leases.py) -------------------------------------------------

    def claim_shard(
        self, dataset: str, shard: int, owner: str, ttl: float, steal_from: str | None = None
    ) -> Lease | None:
        return self._leases.claim_shard(dataset, shard, owner, ttl, steal_from)

    def renew_leases(self, held: Iterable[Lease], ttl: float) -> list[Lease]:
        return self._leases.renew_leases(held, ttl)

    def release_leases(self, held: Iterable[Lease]) -> None:
        self._leases.release_leases(held)

    def lease_holders(self, dataset: str) -> dict[int, tuple[str, float]]:
        return self._leases.lease_holders(dataset)

    # --- records routing (tables/routes.py) ----------------------------------------------

    def route_checkpoint(self, dataset: str, generation: int) -> RouteCheckpoint | None:
        return self._routes.route_checkpoint(dataset, generation)

    def last_csv_header(self, dataset: str, before: int) -> bytes | None:
        return self._routes.last_csv_header(dataset, before)

    def save_route_checkpoint(self, dataset: str, generation: int, cp: RouteCheckpoint) -> None:
        self._routes.save_route_checkpoint(dataset, generation, cp)

    # --- shards (tables/shards.py) -------------------------------------------------------

    def shard_status(self, dataset: str, generation: int, shard: int) -> ShardStatus:
        return self._shards.shard_status(dataset, generation, shard)

    def set_shard_status(
        self,
        dataset: str,
        generation: int,
        shard: int,
        status: ShardStatus,
        manifest_key: str | None = None,
    ) -> None:
        self._shards.set_shard_status(dataset, generation, shard, status, manifest_key)

    def complete_shards(self, dataset: str, generation: int) -> set[int]:
        return self._shards.complete_shards(dataset, generation)

    def complete_shard(
        self,
        dataset: str,
        generation: int,
        shard: int,
        *,
        manifest_key: str | None,
        manifest_xxh3: str | None = None,
        base: bool = False,
        inventory: bytes | None = None,
        live_records: int = 0,
        digest: str | None = None,
        removed_records: int = 0,
        fence: Fence | None = None,
    ) -> None:
        self._shards.complete_shard(
            dataset,
            generation,
            shard,
            manifest_key=manifest_key,
            manifest_xxh3=manifest_xxh3,
            base=base,
            inventory=inventory,
            live_records=live_records,
            digest=digest,
            removed_records=removed_records,
            fence=fence,
        )

    def shard_progress(self, dataset: str, generation: int) -> list[ShardProgress]:
        return self._shards.shard_progress(dataset, generation)

    def shard_heads(self, dataset: str, shard: int) -> list[ShardHeadRow]:
        return self._shards.shard_heads(dataset, shard)

    def latest_heads(self, dataset: str) -> dict[int, ShardHeadRow]:
        return self._shards.latest_heads(dataset)

    def forget_shard_generations(
        self,
        dataset: str,
        shard: int,
        generations: Iterable[int],
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        self._shards.forget_shard_generations(dataset, shard, generations, ledger)

    def shard_inventory(self, dataset: str, shard: int, before: int) -> bytes | None:
        return self._shards.shard_inventory(dataset, shard, before)

    def prune_inventories(self, dataset: str, shard: int, keep_from: int) -> None:
        self._shards.prune_inventories(dataset, shard, keep_from)

    # --- generations (tables/generations.py) ---------------------------------------------

    def generations(self, dataset: str) -> list[GenerationRow]:
        return self._generations.generations(dataset)

    def latest_generation(self, dataset: str) -> GenerationRow | None:
        return self._generations.latest_generation(dataset)

    def open_generation(self, dataset: str, generation: int, kind: str) -> GenerationRow:
        return self._generations.open_generation(dataset, generation, kind)

    def commit_generation(
        self,
        dataset: str,
        generation: int,
        *,
        changed_records: int,
        changed_bytes: int,
        record_xxh3: str,
        finished_at: float,
        started_at: float | None = None,
    ) -> None:
        self._generations.commit_generation(
            dataset,
            generation,
            changed_records=changed_records,
            changed_bytes=changed_bytes,
            record_xxh3=record_xxh3,
            finished_at=finished_at,
            started_at=started_at,
        )

    # --- chunks (tables/chunks.py) -------------------------------------------------------

    def commit_chunks(
        self,
        chunks_: Iterable[CommittedChunk],
        fence: Fence | None = None,
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        self._chunks.commit_chunks(chunks_, fence, ledger)

    def forget_chunks(
        self,
        dataset: str,
        generation: int,
        object_keys: Iterable[str],
        fence: Fence | None = None,
        ledger: Sequence[LedgerMove] = (),
    ) -> None:
        self._chunks.forget_chunks(dataset, generation, object_keys, fence, ledger)

    def has_chunks(self, dataset: str, generation: int) -> bool:
        return self._chunks.has_chunks(dataset, generation)

    def chunk_count(self, dataset: str, generation: int, shard: int) -> int:
        return self._chunks.chunk_count(dataset, generation, shard)

    def committed_chunk(
        self, dataset: str, generation: int, object_key: str
    ) -> CommittedChunk | None:
        return self._chunks.committed_chunk(dataset, generation, object_key)

    def shard_chunks(self, dataset: str, generation: int, shard: int) -> Iterator[CommittedChunk]:
        return self._chunks.shard_chunks(dataset, generation, shard)

    # --- audit ledger heads (tables/ledger.py) -------------------------------------------

    def ledger_heads(self, dataset: str, shard_ids: Iterable[int]) -> dict[int, LedgerHead]:
        return self._ledger.ledger_heads(dataset, shard_ids)

    def ledger_begun(self, dataset: str) -> bool:
        return self._ledger.ledger_begun(dataset)

    def ledger_head(self, dataset: str, shard: int) -> LedgerHead | None:
        return self._ledger.ledger_head(dataset, shard)

    def set_ledger_head(self, head: LedgerHead) -> None:
        self._ledger.set_ledger_head(head)

    # --- multipart upload journal (tables/uploads.py) ------------------------------------

    def journaled_upload(self, object_key: str) -> UploadEntry | None:
        return self._uploads.journaled_upload(object_key)

    def journal_upload(self, entry: UploadEntry) -> None:
        self._uploads.journal_upload(entry)

    def forget_upload(self, object_key: str) -> None:
        self._uploads.forget_upload(object_key)

    def journaled_uploads(self) -> list[UploadEntry]:
        return self._uploads.journaled_uploads()

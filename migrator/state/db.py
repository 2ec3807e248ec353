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
from pathlib import Path

from sqlalchemy import Engine

from migrator.state.backend import Backend
from migrator.state.facade import Part
from migrator.state.leases import Fence
from migrator.state.sealed import DatasetSealers
from migrator.state.tables.chunks import ChunkTable
from migrator.state.tables.generations import GenerationTable
from migrator.state.tables.landings import LandingTable
from migrator.state.tables.leases import LeaseTable
from migrator.state.tables.ledger import LedgerHeadTable
from migrator.state.tables.meta import MetaTable
from migrator.state.tables.routes import RouteTable
from migrator.state.tables.shards import ShardTable
from migrator.state.tables.uploads import UploadJournal
from migrator.state.tables.verifications import VerificationTable
from migrator.state.urls import STATE_URL_ENV, describe_url, state_url_for

__all__ = ["STATE_URL_ENV", "Fence", "StateDB", "describe_url", "state_url_for"]


class StateDB:
    """Thread-safe: each thread works on its own pooled connection (upload workers journal
    multipart uploads while the coordinating thread commits chunks).

    Each method below is its table module's method, parameters and all (facade.py)."""

    _meta = Part[MetaTable]()
    _leases = Part[LeaseTable]()
    _ledger = Part[LedgerHeadTable]()
    _chunks = Part[ChunkTable]()
    _shards = Part[ShardTable]()
    _routes = Part[RouteTable]()
    _generations = Part[GenerationTable]()
    _uploads = Part[UploadJournal]()
    _landings = Part[LandingTable]()
    _verifications = Part[VerificationTable]()

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
        self._landings = LandingTable(backend)
        self._verifications = VerificationTable(backend)

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

    get_meta = _meta.serves(MetaTable.get_meta)
    claim_for_plan = _meta.serves(MetaTable.claim_for_plan)
    bind_dataset_key = _meta.serves(MetaTable.bind_dataset_key)
    mark_repair = _meta.serves(MetaTable.mark_repair)
    clear_repair = _meta.serves(MetaTable.clear_repair)
    pending_repairs = _meta.serves(MetaTable.pending_repairs)

    # --- shard leases (tables/leases.py) -------------------------------------------------

    claim_shard = _leases.serves(LeaseTable.claim_shard)
    claim_shards = _leases.serves(LeaseTable.claim_shards)
    renew_leases = _leases.serves(LeaseTable.renew_leases)
    release_leases = _leases.serves(LeaseTable.release_leases)
    lease_holders = _leases.serves(LeaseTable.lease_holders)

    # --- records routing (tables/routes.py) ----------------------------------------------

    route_checkpoint = _routes.serves(RouteTable.route_checkpoint)
    last_csv_header = _routes.serves(RouteTable.last_csv_header)
    save_route_checkpoint = _routes.serves(RouteTable.save_route_checkpoint)

    # --- shards (tables/shards.py) -------------------------------------------------------

    shard_status = _shards.serves(ShardTable.shard_status)
    set_shard_status = _shards.serves(ShardTable.set_shard_status)
    complete_shards = _shards.serves(ShardTable.complete_shards)
    complete_shard = _shards.serves(ShardTable.complete_shard)
    shard_progress = _shards.serves(ShardTable.shard_progress)
    shard_heads = _shards.serves(ShardTable.shard_heads)
    all_shard_heads = _shards.serves(ShardTable.all_shard_heads)
    complete_untouched_shards = _shards.serves(ShardTable.complete_untouched_shards)
    latest_heads = _shards.serves(ShardTable.latest_heads)
    head_digests = _shards.serves(ShardTable.head_digests)
    forget_shard_generations = _shards.serves(ShardTable.forget_shard_generations)
    shard_inventory = _shards.serves(ShardTable.shard_inventory)
    prune_inventories = _shards.serves(ShardTable.prune_inventories)
    prune_all_inventories = _shards.serves(ShardTable.prune_all_inventories)

    # --- generations (tables/generations.py) ---------------------------------------------

    generations = _generations.serves(GenerationTable.generations)
    latest_generation = _generations.serves(GenerationTable.latest_generation)
    open_generation = _generations.serves(GenerationTable.open_generation)
    commit_generation = _generations.serves(GenerationTable.commit_generation)

    # --- chunks (tables/chunks.py) -------------------------------------------------------

    commit_chunks = _chunks.serves(ChunkTable.commit_chunks)
    forget_chunks = _chunks.serves(ChunkTable.forget_chunks)
    has_chunks = _chunks.serves(ChunkTable.has_chunks)
    commit_repaired_digests = _chunks.serves(ChunkTable.commit_repaired_digests)
    chunk_count = _chunks.serves(ChunkTable.chunk_count)
    committed_chunk = _chunks.serves(ChunkTable.committed_chunk)
    shard_chunks = _chunks.serves(ChunkTable.shard_chunks)

    # --- audit ledger heads (tables/ledger.py) -------------------------------------------

    ledger_heads = _ledger.serves(LedgerHeadTable.ledger_heads)
    ledger_begun = _ledger.serves(LedgerHeadTable.ledger_begun)
    ledger_head = _ledger.serves(LedgerHeadTable.ledger_head)
    set_ledger_head = _ledger.serves(LedgerHeadTable.set_ledger_head)

    # --- multipart upload journal (tables/uploads.py) ------------------------------------

    journaled_upload = _uploads.serves(UploadJournal.journaled_upload)
    journal_upload = _uploads.serves(UploadJournal.journal_upload)
    forget_upload = _uploads.serves(UploadJournal.forget_upload)
    journaled_uploads = _uploads.serves(UploadJournal.journaled_uploads)

    # --- landing checkpoints (tables/landings.py) ----------------------------------------

    landed_generations = _landings.serves(LandingTable.landed_generations)
    set_landed = _landings.serves(LandingTable.set_landed)

    # --- integrity verdicts (tables/verifications.py) ------------------------------------

    record_verdicts = _verifications.serves(VerificationTable.record_verdicts)
    verdicts = _verifications.serves(VerificationTable.verdicts)

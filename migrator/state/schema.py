"""The state store's tables, one definition for SQLite and PostgreSQL.

Queries are built from these; the tables themselves are created and altered only by the
migrations in `migrations/versions` (which keep their own frozen copies), so an existing store
moves forward step by step instead of being recreated.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)

metadata = MetaData()

# Sizes and offsets reach petabytes: BigInteger (int8 on PostgreSQL) wherever they are kept.
meta = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

routes = Table(
    "routes",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("next_file", BigInteger, nullable=False),
    Column("inventory_digest", Text, nullable=False),
    Column("spool_sizes", LargeBinary, nullable=False),
    Column("csv_header", LargeBinary),
    Column("complete", Integer, nullable=False),
)

shards = Table(
    "shards",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("status", Text, nullable=False),
    Column("manifest_key", Text),
    Column("updated_at", Float, nullable=False),
    Column("manifest_xxh3", Text),
    Column("base", Integer, nullable=False, server_default="0"),
    Column("live_records", BigInteger, nullable=False, server_default="0"),
    Column("digest", Text),
    Column("removed_records", BigInteger, nullable=False, server_default="0"),
    Column("chunks_n", BigInteger, nullable=False, server_default="0"),
    Column("records_n", BigInteger, nullable=False, server_default="0"),
    Column("plain_n", BigInteger, nullable=False, server_default="0"),
    Column("stored_n", BigInteger, nullable=False, server_default="0"),
)

generations = Table(
    "generations",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("changed_records", BigInteger, nullable=False, server_default="0"),
    Column("changed_bytes", BigInteger, nullable=False, server_default="0"),
    Column("record_xxh3", Text),
)

shard_maps = Table(
    "shard_maps",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("blob", LargeBinary, nullable=False),
)

chunks = Table(
    "chunks",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("object_key", Text, primary_key=True),
    Column("shard", Integer, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("name", Text),
    Column("records", BigInteger, nullable=False),
    Column("plain_size", BigInteger, nullable=False),
    Column("stored_size", BigInteger, nullable=False),
    Column("plain_xxh3", Text, nullable=False),
    Column("stored_xxh3", Text, nullable=False),
    Column("source_end", BigInteger, nullable=False),
    Column("source_version", Text, nullable=False),
    Column("committed_at", Float, nullable=False),
)
Index("chunks_by_shard", chunks.c.dataset, chunks.c.generation, chunks.c.shard, chunks.c.sequence)

uploads = Table(
    "uploads",
    metadata,
    Column("object_key", Text, primary_key=True),
    Column("upload_id", Text, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("plain_xxh3", LargeBinary, nullable=False),
    Column("stored_xxh3", LargeBinary, nullable=False),
    Column("stored_size", BigInteger, nullable=False),
    Column("started_at", Float, nullable=False),
)

# A worker's claim on a shard (whatever the generation): who holds it, until when (the state
# server's clock), and a token that grows with every claim, so a writer that lost its lease is
# refused even if it comes back before anyone else wrote.
leases = Table(
    "leases",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("claimed_at", Float, nullable=False),
)

# The end of each shard's audit ledger at the destination (docs/FORMAT.md §11): its last
# committed segment, how many entries the ledger holds, and the chain value of the last one.
# Moved in the same transaction as the chunk rows the segment records.
ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("segment", BigInteger, nullable=False),
    Column("entries", BigInteger, nullable=False),
    Column("link", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Landing: the last generation applied to each shard's landing target (a bucket's objects; a
# table keeps its own checkpoint in its own database, in the transaction that lands the rows).
landings = Table(
    "landings",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("target", Text, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Integrity verdicts (`migrator verify`, the Dagster checks): per shard and head manifest the
# latest check that passed and the latest that failed, so the cutover gate can refuse a shard
# whose failure no full read-back cleared, or whose head was never checked (a pass never
# overwrites a failure). Not rebuilt from the destination: a rebuilt store re-checks.
verifications = Table(
    "verifications",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("shard", Integer, primary_key=True),
    Column("head", BigInteger, primary_key=True),  # the head manifest's generation (0: none)
    Column("head_xxh3", Text),  # the stored xxh3 of that manifest (None: it could not be read)
    Column("passed", Integer, primary_key=True),
    Column("problems", BigInteger, nullable=False),
    Column("first_problem", Text),  # "ErrorClass: message", without key material
    Column("object_key", Text),  # the object the first problem names
    Column("sample", Float, nullable=False),
    Column("quick", Integer, nullable=False),
    Column("checked_at", Float, nullable=False),
)

"""The state store as the first releases kept it (their SQLite `meta.schema` 2).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIG = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "routes",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("next_file", _BIG, nullable=False),
        sa.Column("inventory_digest", sa.Text, nullable=False),
        sa.Column("spool_sizes", sa.LargeBinary, nullable=False),
        sa.Column("csv_header", sa.LargeBinary),
        sa.Column("complete", sa.Integer, nullable=False),
    )
    op.create_table(
        "shards",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("manifest_key", sa.Text),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("manifest_xxh3", sa.Text),
        sa.Column("base", sa.Integer, nullable=False, server_default="0"),
        sa.Column("live_records", _BIG, nullable=False, server_default="0"),
        sa.Column("digest", sa.Text),
        sa.Column("removed_records", _BIG, nullable=False, server_default="0"),
        sa.Column("chunks_n", _BIG, nullable=False, server_default="0"),
        sa.Column("records_n", _BIG, nullable=False, server_default="0"),
        sa.Column("plain_n", _BIG, nullable=False, server_default="0"),
        sa.Column("stored_n", _BIG, nullable=False, server_default="0"),
    )
    op.create_table(
        "generations",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("changed_records", _BIG, nullable=False, server_default="0"),
        sa.Column("changed_bytes", _BIG, nullable=False, server_default="0"),
        sa.Column("record_xxh3", sa.Text),
    )
    op.create_table(
        "shard_maps",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("blob", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "chunks",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("object_key", sa.Text, primary_key=True),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("sequence", _BIG, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("records", _BIG, nullable=False),
        sa.Column("plain_size", _BIG, nullable=False),
        sa.Column("stored_size", _BIG, nullable=False),
        sa.Column("plain_xxh3", sa.Text, nullable=False),
        sa.Column("stored_xxh3", sa.Text, nullable=False),
        sa.Column("source_end", _BIG, nullable=False),
        sa.Column("source_version", sa.Text, nullable=False),
        sa.Column("committed_at", sa.Float, nullable=False),
    )
    op.create_index("chunks_by_shard", "chunks", ["dataset", "generation", "shard", "sequence"])
    op.create_table(
        "uploads",
        sa.Column("object_key", sa.Text, primary_key=True),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("plain_xxh3", sa.LargeBinary, nullable=False),
        sa.Column("stored_xxh3", sa.LargeBinary, nullable=False),
        sa.Column("stored_size", _BIG, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
    )

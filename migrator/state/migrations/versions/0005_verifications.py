"""Integrity verdicts: each shard's latest check of each head manifest, for the cutover gate.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("head", sa.BigInteger, primary_key=True),
        sa.Column("head_xxh3", sa.Text),
        sa.Column("passed", sa.Integer, primary_key=True),
        sa.Column("problems", sa.BigInteger, nullable=False),
        sa.Column("first_problem", sa.Text),
        sa.Column("object_key", sa.Text),
        sa.Column("sample", sa.Float, nullable=False),
        sa.Column("quick", sa.Integer, nullable=False),
        sa.Column("checked_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("verifications")

"""The store's own facts (the meta table): which plan it serves, and which datasets' plain values
of an older release are sealed by now; binding a dataset's key is where that sealing happens."""

from __future__ import annotations

from sqlalchemy import select

from migrator.errors import StateError
from migrator.keys.datakey import DataKey
from migrator.state.schema import meta
from migrator.state.sealed import StateSealer, legacy_marker, seal_legacy_rows
from migrator.state.tables.base import SealedTable

REPAIR_PREFIX = "repair:"


class MetaTable(SealedTable):
    def get_meta(self, key: str) -> str | None:
        with self.backend.read() as conn:
            row = conn.execute(select(meta.c.value).where(meta.c.key == key)).fetchone()
        return None if row is None else str(row[0])

    def mark_repair(self, dataset: str, shard: int, generation: int) -> None:
        """A repair of the shard may have begun storing (repair.py): until it is cleared, no
        run or compaction of the dataset may build on the state store's digests of it."""
        row = {"key": f"{REPAIR_PREFIX}{dataset}:{shard}", "value": str(generation)}
        with self.backend.write("mark a repair") as conn:
            conn.execute(self.backend.upsert(meta, row, ["key"]), row)

    def clear_repair(self, dataset: str, shard: int) -> None:
        with self.backend.write("clear a repair") as conn:
            conn.execute(meta.delete().where(meta.c.key == f"{REPAIR_PREFIX}{dataset}:{shard}"))

    def pending_repairs(self, dataset: str) -> dict[int, int]:
        """shard -> generation of every repair of the dataset begun and not finished."""
        prefix = f"{REPAIR_PREFIX}{dataset}:"
        with self.backend.read() as conn:
            rows = conn.execute(
                select(meta.c.key, meta.c.value).where(meta.c.key.startswith(prefix))
            ).fetchall()
        return {int(key[len(prefix) :]): int(value) for key, value in rows}

    def claim_for_plan(self, plan: str) -> None:
        """A store serves one plan: datasets of two plans must never mix in one database."""
        with self.backend.write("record the plan") as conn:
            conn.execute(
                self.backend.insert(meta).on_conflict_do_nothing(index_elements=["key"]),
                {"key": "plan", "value": plan},
            )
            owner = conn.execute(select(meta.c.value).where(meta.c.key == "plan")).scalar_one()
        if owner != plan:
            raise StateError(
                f"{self.backend.path}: this state store belongs to plan {owner!r}, not {plan!r};"
                " give each plan its own database (state_url) or state_dir"
            )

    def bind_dataset_key(self, dataset: str, first: DataKey) -> None:
        """Names and digests of `dataset` are sealed under a key derived from its first data
        key: bind it before writing or reading them. The first bind seals what an older
        release stored in plain."""
        sealer = StateSealer(dataset, first)
        marker = legacy_marker(dataset)
        with self.backend.read() as conn:
            done = conn.execute(select(meta.c.value).where(meta.c.key == marker)).first()
        if done is None:
            with self.backend.write(f"seal dataset {dataset}'s values") as conn:
                seal_legacy_rows(conn, sealer)
                conn.execute(
                    self.backend.insert(meta).on_conflict_do_nothing(index_elements=["key"]),
                    {"key": marker, "value": "1"},
                )
        self.sealers.bind(sealer)

"""A dataset's generations (bulk runs, syncs, compactions): opened by the first worker of a run,
committed once the generation record is stored."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from migrator.codec.generation import GenerationKind
from migrator.state.backend import Backend
from migrator.state.model import GenerationRow
from migrator.state.schema import generations


class GenerationTable:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def generations(self, dataset: str) -> list[GenerationRow]:
        with self.backend.read() as conn:
            rows = conn.execute(
                select(
                    generations.c.dataset,
                    generations.c.generation,
                    generations.c.kind,
                    generations.c.status,
                    generations.c.started_at,
                    generations.c.finished_at,
                    generations.c.changed_records,
                    generations.c.changed_bytes,
                    generations.c.record_xxh3,
                )
                .where(generations.c.dataset == dataset)
                .order_by(generations.c.generation)
            ).fetchall()
        return [
            GenerationRow(dataset, generation, GenerationKind(kind), *rest)
            for dataset, generation, kind, *rest in rows
        ]

    def latest_generation(self, dataset: str) -> GenerationRow | None:
        rows = self.generations(dataset)
        return rows[-1] if rows else None

    def open_generation(self, dataset: str, generation: int, kind: GenerationKind) -> GenerationRow:
        """Start `generation` unless it exists (a shard run of another process opened it)."""
        with self.backend.write("open a generation") as conn:
            conn.execute(
                self.backend.insert(generations).on_conflict_do_nothing(
                    index_elements=["dataset", "generation"]
                ),
                {
                    "dataset": dataset,
                    "generation": generation,
                    "kind": str(kind),
                    "status": "open",
                    "started_at": time.time(),
                },
            )
        return next(g for g in self.generations(dataset) if g.generation == generation)

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
        """The generation's record is stored. `started_at`: as the record tells it, when the
        state is rebuilt from the destination."""
        values: dict[str, object] = {
            "status": "committed",
            "finished_at": finished_at,
            "changed_records": changed_records,
            "changed_bytes": changed_bytes,
            "record_xxh3": record_xxh3,
        }
        if started_at is not None:
            values["started_at"] = started_at
        with self.backend.write("commit a generation") as conn:
            conn.execute(
                update(generations)
                .where(generations.c.dataset == dataset, generations.c.generation == generation)
                .values(**values)
            )

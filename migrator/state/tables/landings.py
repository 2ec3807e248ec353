"""Landing checkpoints: how far each shard's landing target has been brought, so a landing
resumes at the next generation and the operator's views can say which shards lag."""

from __future__ import annotations

import time

from sqlalchemy import select

from migrator.state.backend import Backend
from migrator.state.schema import landings


class LandingTable:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def landed_generations(self, dataset: str, target: str) -> dict[int, int]:
        """Each shard's last landed generation; shards never landed are left out."""
        with self.backend.read() as conn:
            rows = conn.execute(
                select(landings.c.shard, landings.c.generation).where(
                    landings.c.dataset == dataset, landings.c.target == target
                )
            ).fetchall()
        return {int(shard): int(generation) for shard, generation in rows}

    def set_landed(self, dataset: str, target: str, shard: int, generation: int) -> None:
        row = {
            "dataset": dataset,
            "target": target,
            "shard": shard,
            "generation": generation,
            "updated_at": time.time(),
        }
        with self.backend.write("record a landing checkpoint") as conn:
            conn.execute(self.backend.upsert(landings, row, ["dataset", "target", "shard"]), row)

"""Records routing checkpoints: how far a generation's routing got, so a rerun resumes it, and
the CSV header it saw, so the next sync checks the source still has it."""

from __future__ import annotations

import struct

from sqlalchemy import select

from migrator.state.model import RouteCheckpoint
from migrator.state.schema import routes
from migrator.state.tables.base import SealedTable


class RouteTable(SealedTable):
    def route_checkpoint(self, dataset: str, generation: int) -> RouteCheckpoint | None:
        with self.backend.read() as conn:
            row = conn.execute(
                select(
                    routes.c.next_file,
                    routes.c.inventory_digest,
                    routes.c.spool_sizes,
                    routes.c.csv_header,
                    routes.c.complete,
                ).where(routes.c.dataset == dataset, routes.c.generation == generation)
            ).fetchone()
        if row is None:
            return None
        blob = bytes(row[2])
        sizes = struct.unpack(f">{len(blob) // 8}Q", blob)
        header = (
            None
            if row[3] is None
            else self.sealers.open_bytes(dataset, "csv_header", bytes(row[3]))
        )
        listing = self.sealers.open_text(dataset, "inventory_digest", row[1])
        return RouteCheckpoint(int(row[0]), listing or "", sizes, header, bool(row[4]))

    def last_csv_header(self, dataset: str, before: int) -> bytes | None:
        """The CSV header the last completed routing before generation `before` saw."""
        with self.backend.read() as conn:
            row = conn.execute(
                select(routes.c.csv_header)
                .where(
                    routes.c.dataset == dataset,
                    routes.c.generation < before,
                    routes.c.complete == 1,
                )
                .order_by(routes.c.generation.desc())
                .limit(1)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return self.sealers.open_bytes(dataset, "csv_header", bytes(row[0]))

    def save_route_checkpoint(self, dataset: str, generation: int, cp: RouteCheckpoint) -> None:
        sealer = self.sealers.require(dataset, "the routing checkpoint")
        row = {
            "dataset": dataset,
            "generation": generation,
            "next_file": cp.next_file,
            "inventory_digest": sealer.seal_text("inventory_digest", cp.inventory_digest),
            "spool_sizes": struct.pack(f">{len(cp.spool_sizes)}Q", *cp.spool_sizes),
            "csv_header": (
                None if cp.csv_header is None else sealer.seal_bytes("csv_header", cp.csv_header)
            ),
            "complete": int(cp.complete),
        }
        with self.backend.write("save the routing checkpoint") as conn:
            conn.execute(self.backend.upsert(routes, row, ["dataset", "generation"]), row)

"""What a shard's manifest in a generation states beyond its chunks: its change set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from migrator.state.model import CommittedChunk


@dataclass
class ShardDelta:
    """A shard's base or delta: what it removes, the digests it moves by, and the inventory the
    state store keeps once the shard is complete."""

    previous: int  # 0: a base
    previous_xxh3: str | None
    removed: tuple[str, ...]  # records: hex key hashes; objects: names
    removed_records: int
    removed_digest: int
    added_digest: int
    digest: int
    live_records: int
    inventory: bytes | Path  # packed inventory, or the file that holds it
    keep: Callable[[CommittedChunk], bool] | None = None  # objects: parts still current
    replaced: int = 0  # of `removed`, keys (names) written again: edits, not removals

    @property
    def base(self) -> bool:
        return self.previous == 0

    def inventory_bytes(self) -> bytes:
        return self.inventory.read_bytes() if isinstance(self.inventory, Path) else self.inventory

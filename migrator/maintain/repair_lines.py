"""What a repair reports: each chunk it repaired, and, where it cannot repair, one line per
chunk or shard saying why and what to do then (docs/REPAIR.md, "When repair refuses")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrator.codec.manifest import ChunkRef
from migrator.errors import FormatError, MissingObjectError
from migrator.repository.manifests import StoredManifest

if TYPE_CHECKING:
    from migrator.read.verify import VerifyReport

REFUSED_HINT = (
    "the chunk is left as it was: put the source's records back as they were then and rerun"
    " repair, or restore the object from a copy of the destination (docs/REPAIR.md)"
)
REFUSED_PART_HINT = (
    "the part is left as it was: run `migrator run` (stores the object as it is now), then"
    " `migrator compact` (folds the chain, dropping the lost part), or restore the object from"
    " a copy of the destination (docs/REPAIR.md)"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    shard: int | None
    object_key: str | None
    reason: str  # why, and what the operator does then

    def line(self, dataset: str) -> str:
        where = f"dataset {dataset}" + ("" if self.shard is None else f" shard {self.shard}")
        what = f" {self.object_key}" if self.object_key else ""
        return f"{where}:{what} not repaired: {self.reason}"


def manifest_refusal(shard: int, exc: FormatError) -> Refusal:
    """A manifest of the shard's chain is missing or does not open: it cannot be rebuilt."""
    what = "is missing" if isinstance(exc, MissingObjectError) else f"does not open ({exc})"
    return Refusal(
        shard,
        getattr(exc, "object_key", None),
        f"the shard's manifest {what}; a manifest cannot be rebuilt from the source (it pins"
        " the stored digests of chunks sealed under salts only it recorded): restore it from a"
        " copy of the destination (a versioned bucket's previous version), or migrate the"
        " dataset anew; the shard is left as it was",
    )


@dataclass(frozen=True, slots=True)
class RepairedChunk:
    shard: int
    generation: int
    object_key: str
    problem: str  # what the read-back found: the error class and its message


@dataclass
class RepairReport:
    dataset: str
    dry_run: bool = False
    shards: list[int] = field(default_factory=list)  # shards read back
    chunks_checked: int = 0
    repaired: list[RepairedChunk] = field(default_factory=list)  # dry run: would be
    refused: list[Refusal] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)  # shards an interrupted repair left
    verify: VerifyReport | None = None  # the full read-back after the repair
    rechecked: list[int] = field(default_factory=list)  # the shards that read-back covered

    @property
    def ok(self) -> bool:
        return not self.refused and (self.verify is None or self.verify.ok)

    def lines(self) -> list[str]:
        verb = "would repair" if self.dry_run else "repaired"
        out = [
            f"dataset {self.dataset} shard {r.shard}: {r.object_key} {verb} (was {r.problem})"
            for r in self.repaired
        ]
        out += [r.line(self.dataset) for r in self.refused]
        return out


@dataclass(frozen=True, slots=True)
class Damaged:
    """A chunk the read-back found failing: where its chain lists it, and what failed."""

    link: StoredManifest
    index: int  # of its manifest in the chain
    ref: ChunkRef
    problem: str

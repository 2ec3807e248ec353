"""What a run reports: per dataset, per run, and as it goes (a progress sink)."""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.plan.kinds import DatasetKind


class ProgressSink:
    """What the engine reports while it works; the CLI draws it, tests may count it."""

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        """A new phase of a dataset; bytes advance from 0 toward total."""

    def advance(self, nbytes: int) -> None:
        """nbytes of source data passed the phase."""


@dataclass
class DatasetReport:
    name: str
    kind: DatasetKind
    shards: int
    chunks_written: int = 0
    chunks_skipped: int = 0
    records: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0
    orphaned_uploads: int = 0  # unfinished multipart uploads found and aborted
    generation: int = 0
    generation_kind: str = ""  # bulk | sync
    shards_changed: int = 0  # shards this generation wrote a manifest for
    removed: int = 0  # keys (records) or names (objects) removed from the source
    replaced: int = 0  # keys or names written again with other content (an edit, a rewrite)
    committed: bool = False  # the generation record is stored: restore sees this generation

    @property
    def compression_ratio(self) -> float:
        return self.bytes_in / self.bytes_stored if self.bytes_stored else 0.0


@dataclass(frozen=True)
class RouteReport:
    """What `MigrationRun.route` did: the working generation's routing tasks, how many
    source bytes this worker routed, and whether routing is complete."""

    dataset: str
    generation: int
    tasks: int
    files: int
    files_to_route: int
    bytes_routed: int
    complete: bool


@dataclass
class RunReport:
    plan: str
    destination: str
    datasets: list[DatasetReport] = field(default_factory=list)
    seconds: float = 0.0
    bandwidth_limit: int | None = None  # bytes a second, when uploads were limited

    @property
    def bytes_in(self) -> int:
        return sum(d.bytes_in for d in self.datasets)

    @property
    def bytes_stored(self) -> int:
        return sum(d.bytes_stored for d in self.datasets)

    @property
    def chunks_written(self) -> int:
        return sum(d.chunks_written for d in self.datasets)

    @property
    def chunks_skipped(self) -> int:
        return sum(d.chunks_skipped for d in self.datasets)

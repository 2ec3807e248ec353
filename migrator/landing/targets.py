"""A dataset's landing targets, opened from its plan: a table, a bucket of objects, a bucket of
per-shard records files. Adapters are imported only for the kinds a plan names (the table
needs SQLAlchemy's PostgreSQL dialect, a cloud bucket its SDK)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

from migrator.landing.target import ObjectsTarget, RecordsTarget, ShardFilesTarget
from migrator.plan.destination import DestinationPlan
from migrator.plan.landing import LandingTablePlan
from migrator.plan.model import DatasetKind, DatasetPlan, Plan
from migrator.stores.base import ObjectStore


@dataclass(eq=False)
class DatasetTargets(AbstractContextManager["DatasetTargets"]):
    dataset: str
    table: RecordsTarget | None = None
    files: ShardFilesTarget | None = None
    objects: ObjectsTarget | None = None
    objects_name: str = ""  # the objects target's name in the state store's checkpoints

    def describe(self) -> list[str]:
        return [t.describe() for t in (self.table, self.files, self.objects) if t is not None]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        close = getattr(self.table, "close", None)
        if close is not None:
            close()


# Opens a landing bucket's store; by default as the plan says (wiring.open_landing_store), a
# stand-in's for a demo or dry run.
OpenStore = Callable[[Plan, DestinationPlan], ObjectStore]
# A landing table's database URL; by default from the variable the plan names
# (wiring.landing_table_url), a stand-in's for a dry run.
TableUrl = Callable[[Plan, LandingTablePlan], str]


def open_targets(
    plan: Plan,
    ds: DatasetPlan,
    open_store: OpenStore | None = None,
    table_url: TableUrl | None = None,
) -> DatasetTargets:
    """The dataset's targets as its `landing` names them (tables prepared on first use)."""
    from migrator.wiring import landing_table_url, open_landing_store

    opener: OpenStore = open_store or open_landing_store
    url_of: TableUrl = table_url or landing_table_url
    landing = ds.landing
    targets = DatasetTargets(ds.name)
    if landing is None:
        return targets
    if ds.kind is DatasetKind.OBJECTS:
        if landing.bucket is not None:
            from migrator.landing.bucket import BucketObjects

            store = opener(plan, landing.bucket)
            part_size = ds.part_size or plan.chunk_size
            targets.objects = BucketObjects(
                store, dataset=ds.name, part_size=part_size, shards=ds.shards
            )
            targets.objects_name = store.describe()
        return targets
    records = ds.records
    csv = records.format == "csv"
    if landing.table is not None:
        from migrator.landing.table import PostgresTable

        targets.table = PostgresTable(
            url_of(plan, landing.table),
            landing.table.name,
            dataset=ds.name,
            key_column=records.key,
            csv=csv,
            json_doc=not csv and landing.table.json_as == "jsonb",
            delimiter=records.csv_delimiter,
            shards=ds.shards,
        )
    if landing.bucket is not None:
        from migrator.landing.shard_files import BucketShardFiles

        targets.files = BucketShardFiles(
            opener(plan, landing.bucket),
            dataset=ds.name,
            fmt=records.format,
            delimiter=records.csv_delimiter,
            key=records.key,
        )
    return targets

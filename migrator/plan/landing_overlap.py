"""Where a landing may not go: among the archive's chunks, into a source, or over another
dataset's landing (bucket prefixes that overlap), and two datasets into one table."""

from __future__ import annotations

from dataclasses import dataclass

from migrator.keys.arn import partition_of_region
from migrator.plan.dataset import DatasetPlan
from migrator.plan.destination import (
    AzureDestinationPlan,
    DestinationPlan,
    LocalDestinationPlan,
    S3DestinationPlan,
)
from migrator.plan.section import Problem
from migrator.plan.source import AzureSourcePlan, LocalSourcePlan, S3SourcePlan, SourcePlan

__all__ = ["landing_conflicts"]


@dataclass(frozen=True)
class _Place:
    """A bucket, container or folder a plan names, and the part of it it uses."""

    loc: tuple[str | int, ...]  # the field of the plan that names it
    field: str  # that field as messages name it, e.g. "destination"
    why: str  # what landing there would do
    store: tuple[str, ...]  # kind, then what holds the bucket (partition, account), bucket
    prefix: str  # ends with '/' unless empty

    def overlaps(self, other: _Place) -> bool:
        if len(self.store) != len(other.store) or not all(
            mine == theirs or _ANY in (mine, theirs)
            for mine, theirs in zip(self.store, other.store, strict=True)
        ):
            return False
        return self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)

    def address(self) -> str:
        if self.store[0] == "local":
            return f"folder {self.prefix}"
        return f"{self.store[0]} {self.store[-1]}/{self.prefix}"


# An S3 source without a region may be in any partition (bucket names are unique in each).
_ANY = "*"


_ARCHIVE = "landing would write plain data among the archive's encrypted chunks"
_SOURCE = "a sync would read landed data back as the source's"
_LANDING = "two landings would write and delete each other's objects"


def _place(loc: tuple[str | int, ...], why: str, store: DestinationPlan | SourcePlan) -> _Place:
    field = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    if isinstance(store, LocalDestinationPlan | LocalSourcePlan):
        # A local source reads its whole folder: its prefix is for buckets only.
        prefix = store.prefix if isinstance(store, LocalDestinationPlan) else ""
        folder = (store.path / prefix).as_posix().rstrip("/") + "/"  # /a/b is not in /a/bc
        return _Place((*loc, "path"), field, why, ("local",), folder)
    where: tuple[str, ...]
    if isinstance(store, S3DestinationPlan | S3SourcePlan):
        partition = partition_of_region(store.region) if store.region else _ANY
        where = ("s3", partition, store.bucket)
    else:
        assert isinstance(store, AzureDestinationPlan | AzureSourcePlan)
        account = store.account_url.split("://", 1)[1].split("/", 1)[0].lower()
        where = ("azure", account, store.bucket)  # the account holds the container
    return _Place((*loc, "prefix"), field, why, where, store.prefix)


def landing_conflicts(
    destination: DestinationPlan, datasets: tuple[DatasetPlan, ...]
) -> list[Problem]:
    """Landing buckets that overlap the archive, a source or each other, and tables landed
    twice: plain data among the encrypted chunks, or two datasets rewriting each other."""
    others = [_place(("destination",), _ARCHIVE, destination)]
    others += [
        _place(("datasets", i, "source"), _SOURCE, dataset.source)
        for i, dataset in enumerate(datasets)
    ]
    problems: list[Problem] = []
    tables: dict[tuple[str, str], int] = {}
    for index, dataset in enumerate(datasets):
        landing = dataset.landing
        if landing is None:
            continue
        if landing.bucket is not None:
            place = _place(("datasets", index, "landing", "bucket"), _LANDING, landing.bucket)
            clash = next((other for other in others if place.overlaps(other)), None)
            if clash is not None:
                message = (
                    f"{place.address()} overlaps {clash.field} ({clash.address()}): {clash.why}"
                )
                problems.append((place.loc, message))
            others.append(place)
        if landing.table is not None:
            table = (landing.table.url_env, landing.table.name)
            if table in tables:
                also = f"datasets[{tables[table]}].landing.table"
                message = f"table {table[1]!r} of {table[0]} is landed into by {also} already"
                problems.append((("datasets", index, "landing", "table", "name"), message))
            tables.setdefault(table, index)
    return problems

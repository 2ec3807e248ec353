"""The source a dataset of the plan names."""

from __future__ import annotations

from migrator.errors import UsageError
from migrator.plan.model import DatasetPlan
from migrator.sources.base import FilteredSource, Source
from migrator.sources.local import LocalSource


def open_source(ds: DatasetPlan) -> Source:
    if ds.source.kind == "local":
        assert ds.source.path is not None  # the plan model requires it
        return FilteredSource(LocalSource(ds.source.path), ds.include)
    raise UsageError(f"dataset {ds.name}: source kind {ds.source.kind!r} is not supported")

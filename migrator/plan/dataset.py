"""One dataset of a plan: records (JSON lines or CSV rows, sharded by a key) or objects (files).

A dataset stays one model whatever its kind (the fields of the other kind must be left out or
null); `records` hands routing and readers the records settings typed, so none of them checks
for a missing format or key again.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic.json_schema import JsonSchemaValue

from migrator.plan.kinds import DatasetKind
from migrator.plan.landing import LandingPlan
from migrator.plan.records import NotRecordsDatasetError, RecordsSettings
from migrator.plan.section import PlanModel, Problem, field_errors
from migrator.plan.source import SourcePlan
from migrator.plan.types import (
    MAX_SHARDS,
    ChunkSize,
    IncludePattern,
    Name,
    NonEmpty,
    PositiveInt,
    RecordSize,
    SizeBytes,
)

__all__ = ["DatasetPlan"]

# The fields only one kind uses; a records dataset must name its format and key.
_ONLY_FOR = {
    "format": DatasetKind.RECORDS,
    "key": DatasetKind.RECORDS,
    "csv_delimiter": DatasetKind.RECORDS,
    "on_bad_record": DatasetKind.RECORDS,
    "max_record_size": DatasetKind.RECORDS,
    "part_size": DatasetKind.OBJECTS,
}
_RECORDS_REQUIRE = ("format", "key")


class DatasetPlan(PlanModel):
    """One dataset: records (JSON lines or CSV rows, sharded by `key`) or objects (files)."""

    name: Name
    kind: DatasetKind = Field(description="records | objects.")
    source: SourcePlan
    shards: int = Field(strict=True, ge=1, le=MAX_SHARDS, description="Number of shards.")
    format: Literal["jsonl", "csv"] | None = Field(
        default=None, description="records: jsonl | csv."
    )
    key: NonEmpty | None = Field(
        default=None, description="records: field (jsonl) or column (csv) holding the shard key."
    )
    csv_delimiter: str = Field(
        default=",", strict=True, description="records in csv: one character."
    )
    on_bad_record: Literal["fail", "quarantine"] = Field(
        default="fail",
        description="records: what to do with a record routing cannot use (malformed JSON, a"
        " missing or null key, not UTF-8, a ragged CSV row). fail: stop, naming its file, line"
        " and byte offset; quarantine: set it aside in the dataset's encrypted dead-letter area"
        " and go on.",
    )
    max_record_size: RecordSize | None = Field(
        default=None,
        description="records: the longest record accepted, in bytes without its line feed; a"
        " longer one stops routing, naming its file, line and byte offset. At most an eighth"
        " of memory_budget; null: 64MiB, or an eighth of memory_budget if that is less.",
    )
    part_size: ChunkSize | None = Field(
        default=None,
        description="objects: plaintext bytes per part; default: the plan's chunk_size.",
    )
    include: tuple[IncludePattern, ...] | None = Field(
        default=None,
        description="Glob patterns, relative to source.path, of files to read; null: all.",
    )
    expected_size: SizeBytes | None = Field(
        default=None,
        description="The source's size, for forecasts made where it cannot be listed.",
    )
    expected_files: PositiveInt | None = Field(
        default=None,
        description="The source's number of files, for forecasts of its listing made where it"
        " cannot be listed; null: a file per 64MiB of expected_size.",
    )
    landing: LandingPlan | None = Field(
        default=None,
        description="Where `migrator land` puts the dataset for the new platform to serve:"
        " plain objects in a bucket; records in a PostgreSQL table and/or one file per shard"
        " in a bucket. Checked by the residency policy like the destination.",
    )

    @property
    def records(self) -> RecordsSettings:
        """The records settings, typed; NotRecordsDatasetError for an objects dataset."""
        if self.kind is not DatasetKind.RECORDS or self.format is None or self.key is None:
            raise NotRecordsDatasetError(f"dataset {self.name!r} is not a records dataset")
        return RecordsSettings(
            format=self.format,
            key=self.key,
            csv_delimiter=self.csv_delimiter,
            on_bad_record=self.on_bad_record,
            max_record_size=self.max_record_size,
        )

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Self:
        when = f"when kind is {str(self.kind)!r}"
        problems: list[Problem] = []
        for name, only in _ONLY_FOR.items():
            value = getattr(self, name)
            if self.kind is DatasetKind.RECORDS and name in _RECORDS_REQUIRE and value is None:
                problems.append(((name,), f"required {when}"))
            # model_fields_set: a default (csv_delimiter's ",") is not the author's doing.
            elif only is not self.kind and value is not None and name in self.model_fields_set:
                problems.append(((name,), f"not used {when} (only when it is {str(only)!r})"))
        if self.kind is DatasetKind.RECORDS:
            problems += self._csv_problems()
        if self.landing is not None:
            problems += self.landing.kind_problems(self.kind, self.format)
        if problems:
            raise field_errors("DatasetPlan", problems)
        return self

    def _csv_problems(self) -> list[Problem]:
        if "csv_delimiter" in self.model_fields_set and self.format != "csv":
            return [(("csv_delimiter",), "only used when format is 'csv'")]
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in '"\r\n':
            message = "must be one character other than a quote or newline"
            return [(("csv_delimiter",), f"{message} (got {self.csv_delimiter!r})")]
        return []

    @classmethod
    def add_schema_rules(cls, schema: JsonSchemaValue) -> None:
        """The per-kind rules, as if/then."""
        schema["allOf"] = [
            {
                "if": {"properties": {"kind": {"const": str(kind)}}, "required": ["kind"]},
                "then": {
                    "required": list(_RECORDS_REQUIRE) if kind is DatasetKind.RECORDS else [],
                    "properties": {
                        name: {"type": "null"} for name, only in _ONLY_FOR.items() if only != kind
                    },
                },
            }
            for kind in DatasetKind
        ]

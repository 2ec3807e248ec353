"""Where a dataset lands for the new platform to serve it: plain objects in a bucket or
container, records in a PostgreSQL table and/or as one JSONL or CSV object per shard.

A landing bucket has the destination's shape (one model per kind), but holds plain data: it
is written under the owner's key (SSE-KMS, an encryption scope), takes no Object Lock, and
must lie apart from the archive, from every source and from every other landing bucket.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic.json_schema import JsonSchemaValue

from migrator.plan.destination import DestinationPlan, S3DestinationPlan
from migrator.plan.kinds import DatasetKind
from migrator.plan.section import PlanModel, Problem, field_errors
from migrator.plan.types import AnyStr, EnvVarName

__all__ = ["TABLE_NAME_PATTERN", "LandingPlan", "LandingTablePlan"]

# Unquoted, lower-case identifiers, so the name means the same quoted or not; 40 characters
# leave room under PostgreSQL's 63 for the names landing derives (`<name>_duplicates`, indexes).
TABLE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,39}(\.[a-z_][a-z0-9_]{0,39})?$"
_TABLE_NAME_HINT = (
    "must be a table name, optionally schema-qualified ('app.user_profiles'): up to 40 of"
    " a-z, 0-9 and '_' each, not starting with a digit"
)
# Names a landing table's own bookkeeping takes (the checkpoint table, each table's duplicates).
_RESERVED_TABLE = "migrator_landed"
_DUPLICATES_SUFFIX = "_duplicates"


class LandingTablePlan(PlanModel):
    """A PostgreSQL table that holds a records dataset, one row per key."""

    url_env: EnvVarName = Field(
        description="Environment variable holding the database's SQLAlchemy URL"
        " (postgresql+psycopg2://...); the URL and its password never sit in the plan."
    )
    name: AnyStr = Field(
        description="The table, optionally schema-qualified (app.user_profiles); created if"
        " absent.",
        json_schema_extra={"pattern": TABLE_NAME_PATTERN},
    )
    # `json` would shadow BaseModel.json: the plan's word is the alias.
    json_as: Literal["jsonb", "text"] = Field(
        default="jsonb",
        alias="json",
        description="jsonl datasets only: jsonb: a `doc jsonb` column generated from the"
        " record's text beside it; text: only the original text.",
    )

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        message = None
        if not re.fullmatch(TABLE_NAME_PATTERN, self.name):
            message = f"{_TABLE_NAME_HINT} (got {self.name!r})"
        elif (table := self.name.rpartition(".")[2]) == _RESERVED_TABLE or table.endswith(
            _DUPLICATES_SUFFIX
        ):
            message = (
                f"{table!r} is a name landing keeps for itself ({_RESERVED_TABLE}, and"
                f" <table>{_DUPLICATES_SUFFIX} beside each table): choose another"
            )
        if message:
            raise field_errors("LandingTablePlan", [(("name",), message)])
        return self


class LandingPlan(PlanModel):
    """Where a dataset lands: a bucket, a table (records only), or both."""

    bucket: DestinationPlan | None = Field(
        default=None,
        description="objects: each object at its name; records: one JSONL or CSV object per"
        " shard. Same fields as the destination; an s3 bucket needs sse_kms_key_id.",
    )
    table: LandingTablePlan | None = Field(
        default=None, description="records: a PostgreSQL table keyed by the record's key."
    )

    @model_validator(mode="after")
    def _check_bucket(self) -> Self:
        problems: list[Problem] = []
        if self.bucket is None and self.table is None:
            problems.append(((), "name a bucket, a table, or both"))
        if isinstance(self.bucket, S3DestinationPlan):
            if self.bucket.retention is not None:
                message = "not used in a landing bucket: only the archive's commit points take"
                problems.append((("bucket", "retention"), f"{message} retention"))
            if self.bucket.sse_kms_key_id is None:
                message = (
                    "required in a landing bucket: every landed object is written under"
                    " SSE-KMS with the owner's key (a key ARN)"
                )
                problems.append((("bucket", "sse_kms_key_id"), message))
        if problems:
            raise field_errors("LandingPlan", problems)
        return self

    @classmethod
    def add_schema_rules(cls, schema: JsonSchemaValue) -> None:
        """At least one of bucket and table."""
        schema["anyOf"] = [{"required": ["bucket"]}, {"required": ["table"]}]

    def kind_problems(self, kind: DatasetKind, fmt: str | None) -> list[Problem]:
        """What the dataset's kind and format rule out, at fields below the dataset."""
        if kind is DatasetKind.OBJECTS and self.table is not None:
            message = "not used when kind is 'objects' (objects land only in a bucket)"
            return [(("landing", "table"), message)]
        if self.table is not None and "json_as" in self.table.model_fields_set and fmt != "jsonl":
            return [(("landing", "table", "json"), "only used when format is 'jsonl'")]
        return []


# --- the plan's buckets, apart ------------------------------------------------------------

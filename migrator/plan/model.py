"""The migration plan: one pydantic model, validated once at the edge, and `load_plan`.

Relative paths in a plan file resolve against the file's folder; a loaded `Plan` holds only
absolute paths, plain ints for sizes, and remembers the file it came from (`plan_path`).
Sections whose fields depend on a kind are one model per kind (migrator/plan/destination.py,
source.py, keys.py), or check their kind's fields themselves (dataset.py).
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from migrator.errors import PlanError
from migrator.plan.dataset import DatasetPlan
from migrator.plan.destination import (
    AzureDestinationPlan,
    DestinationPlan,
    LocalDestinationPlan,
    RetentionPlan,
    S3DestinationPlan,
)
from migrator.plan.errors import describe_error, plan_error, yaml_problem
from migrator.plan.keys import (
    AwsKmsKekPlan,
    AwsKmsKeysPlan,
    AzureKeyVaultKekPlan,
    AzureKeyVaultKeysPlan,
    KekPlan,
    KeysPlan,
    LocalKekPlan,
    LocalKeysPlan,
)
from migrator.plan.kinds import DatasetKind, KeyProviderKind, StoreKind
from migrator.plan.landing_overlap import landing_conflicts
from migrator.plan.records import NotRecordsDatasetError, RecordsSettings
from migrator.plan.residency import ResidencyPlan
from migrator.plan.section import PlanModel, Problem, field_errors
from migrator.plan.source import AzureSourcePlan, LocalSourcePlan, S3SourcePlan, SourcePlan
from migrator.plan.types import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_RECORD_SIZE,
    DEFAULT_MEMORY_BUDGET,
    MAX_CHUNK_SIZE,
    MAX_SHARDS,
    MIN_CHUNK_SIZE,
    MIN_RECORD_SIZE,
    NAME_PATTERN,
    RECORD_COPIES,
    ChunkSize,
    Cron,
    Name,
    PlanPath,
    PositiveInt,
    RateBytes,
    SizeBytes,
    StateUrl,
    chunk_size_in_range,
    size_input,
)
from migrator.sizes import format_size

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MEMORY_BUDGET",
    "MAX_CHUNK_SIZE",
    "MAX_SHARDS",
    "MIN_CHUNK_SIZE",
    "NAME_PATTERN",
    "AwsKmsKekPlan",
    "AwsKmsKeysPlan",
    "AzureDestinationPlan",
    "AzureKeyVaultKekPlan",
    "AzureKeyVaultKeysPlan",
    "AzureSourcePlan",
    "DatasetKind",
    "DatasetPlan",
    "DestinationPlan",
    "ForecastPlan",
    "KekPlan",
    "KeyProviderKind",
    "KeysPlan",
    "LocalDestinationPlan",
    "LocalKekPlan",
    "LocalKeysPlan",
    "LocalSourcePlan",
    "NotRecordsDatasetError",
    "Plan",
    "RecordsSettings",
    "ResidencyPlan",
    "RetentionPlan",
    "S3DestinationPlan",
    "S3SourcePlan",
    "SourcePlan",
    "StoreKind",
    "load_plan",
]


class ForecastPlan(PlanModel):
    """Assumptions of the dry run's forecast; prices in USD (null: assumed list prices)."""

    bandwidth: RateBytes = Field(
        default=125_000_000, description="The link to the destination (default 1 Gbit/s)."
    )
    storage_usd_per_gb_month: float | None = Field(default=None, ge=0)
    put_usd_per_1000: float | None = Field(default=None, ge=0)
    get_usd_per_1000: float | None = Field(default=None, ge=0)
    sync_change: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Share of each dataset's source, in bytes of new or changed files, expected"
        " to change between two syncs (0.01: 1 %); forecasts a sync and the write freeze.",
    )


def _at_least_one(datasets: tuple[Any, ...]) -> tuple[Any, ...]:
    if not datasets:
        raise ValueError("must list at least one dataset")
    return datasets


def _version_not_bool(value: object) -> object:
    if isinstance(value, bool):  # YAML `yes` would otherwise pass as 1
        raise ValueError(f"must be 1 (got {value!r})")
    return value


# --- the plan ---------------------------------------------------------------------------


class Plan(PlanModel):
    """A migration plan: where data comes from, where it goes, and under which keys."""

    version: Annotated[Literal[1], BeforeValidator(_version_not_bool)]
    name: Name
    state_dir: PlanPath = Field(description="Checkpoint store and local state.")
    state_url: StateUrl | None = Field(
        default=None,
        description="Shared state store for many workers, e.g. 'postgresql://migrator@db/migr'"
        " (no password: PGPASSWORD or PGPASSFILE); null: SQLite in state_dir."
        " MIGRATOR_STATE_URL overrides it.",
    )
    lease_seconds: int = Field(
        default=120,
        strict=True,
        ge=1,
        le=86400,
        description="A worker's claim on a shard lapses this long after its last renewal.",
    )
    compression_level: int = Field(default=3, strict=True, ge=1, le=22, description="zstd level.")
    chunk_size: ChunkSize = Field(
        default=DEFAULT_CHUNK_SIZE, description="Plaintext target per chunk, 64KiB to 1GiB."
    )
    memory_budget: SizeBytes = Field(
        default=DEFAULT_MEMORY_BUDGET,
        description="In-flight plaintext and ciphertext the engine may hold; at least"
        " twice chunk_size and every part_size.",
    )
    workers: PositiveInt | None = Field(default=None, description="Encoding processes; null: CPUs.")
    upload_concurrency: PositiveInt = Field(default=8, description="Uploads in flight at once.")
    bandwidth_limit: RateBytes | None = Field(
        default=None, description="Upload rate cap for the whole process, e.g. '200MiB/s'."
    )
    residency: ResidencyPlan | None = Field(
        default=None,
        description="Allowed clouds for the destination and keys. Required when the"
        " destination is s3 or azure or a KEK is in a cloud ({allow_any: true} to go without).",
    )
    fips: Literal["auto", "required"] = Field(
        default="auto",
        description="required: every endpoint a FIPS 140 endpoint, and the crypto backend"
        " (OpenSSL) in FIPS mode, or nothing runs. auto: FIPS endpoints in us-gov-* regions.",
    )
    sync_cron: Cron | None = Field(
        default=None,
        description="When incremental syncs run (cron, UTC), e.g. '0 * * * *'; null: hourly.",
    )
    forecast: ForecastPlan = Field(
        default_factory=ForecastPlan, description="Assumptions of the dry run's forecast."
    )
    keys: KeysPlan
    destination: DestinationPlan
    datasets: Annotated[tuple[DatasetPlan, ...], AfterValidator(_at_least_one)]

    _plan_path: Path | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, dict) and context.get("plan_path") is not None:
            self._plan_path = Path(context["plan_path"])

    @property
    def plan_path(self) -> Path | None:
        """The plan file this plan was loaded from (absolute); None if built in code."""
        return self._plan_path

    def max_record_size(self, dataset: DatasetPlan) -> int:
        """The longest record routing accepts for a records dataset (FORMAT.md §1.3)."""
        share = self.memory_budget // RECORD_COPIES
        return dataset.max_record_size or max(MIN_RECORD_SIZE, min(DEFAULT_MAX_RECORD_SIZE, share))

    def dataset(self, name: str) -> DatasetPlan:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(f"plan {self.name!r} has no dataset {name!r}")

    @model_validator(mode="before")
    @classmethod
    def _default_part_size_to_chunk_size(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("datasets"), list | tuple):
            return data
        try:
            raw = data.get("chunk_size", DEFAULT_CHUNK_SIZE)
            chunk_size = chunk_size_in_range(size_input(raw))
        except ValueError:
            return data  # reported on chunk_size itself
        datasets = list(data["datasets"])  # a copy: the caller's data stays as it was
        for index, item in enumerate(datasets):
            is_objects = isinstance(item, dict) and item.get("kind") == DatasetKind.OBJECTS
            if is_objects and item.get("part_size") is None:
                datasets[index] = {**item, "part_size": chunk_size}
        return {**data, "datasets": datasets}

    @model_validator(mode="after")
    def _check_across_fields(self) -> Self:
        problems: list[Problem] = []
        first_index: dict[str, int] = {}
        for index, dataset in enumerate(self.datasets):
            if dataset.name in first_index:
                also = f"datasets[{first_index[dataset.name]}].name"
                message = f"duplicate dataset name {dataset.name!r} (also {also})"
                problems.append((("datasets", index, "name"), message))
            first_index.setdefault(dataset.name, index)
        largest, largest_field = self.chunk_size, "chunk_size"
        for index, dataset in enumerate(self.datasets):
            if dataset.part_size is not None and dataset.part_size > largest:
                largest, largest_field = dataset.part_size, f"datasets[{index}].part_size"
        if self.memory_budget < 2 * largest:
            message = (
                f"must be at least twice {largest_field} ({format_size(2 * largest)}), because"
                " a chunk in flight holds its plaintext and its ciphertext at once"
                f" (got {format_size(self.memory_budget)})"
            )
            problems.append((("memory_budget",), message))
        for index, dataset in enumerate(self.datasets):
            size = dataset.max_record_size
            if size is not None and size * RECORD_COPIES > self.memory_budget:
                message = (
                    f"must be at most an eighth of memory_budget"
                    f" ({format_size(self.memory_budget // RECORD_COPIES)}), because routing"
                    f" holds a record several times over (got {format_size(size)})"
                )
                problems.append((("datasets", index, "max_record_size"), message))
        problems += landing_conflicts(self.destination, self.datasets)
        if problems:
            raise field_errors("Plan", problems)
        return self


# --- loading ----------------------------------------------------------------------------


class _PlanLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate and non-string keys, which PyYAML would accept."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            problem = None
            if not isinstance(key, str):
                problem = f"mapping keys must be strings (got {key!r})"
            elif key in seen:
                problem = f"duplicate key {key!r}"
            if problem:
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_plan(path: str | Path, *, check_sources: bool = True) -> Plan:
    """Read, validate and resolve a plan file; writes nothing. Every failure is a PlanError."""
    shown = str(path)
    plan_file = Path(os.path.abspath(path))
    try:
        text = plan_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(shown, None, f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise PlanError(shown, None, f"cannot read plan: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_PlanLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PlanError(shown, None, yaml_problem(exc)) from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise PlanError(shown, None, f"the top level must be a mapping of fields (got {got})")
    try:
        plan = Plan.model_validate(
            data, context={"plan_dir": plan_file.parent, "plan_path": plan_file}
        )
    except ValidationError as exc:
        problems = [describe_error(Plan, error) for error in exc.errors()]
        raise plan_error(shown, problems) from exc
    if check_sources:
        problems = []
        for index, dataset in enumerate(plan.datasets):
            if not isinstance(dataset.source, LocalSourcePlan):
                continue  # a bucket or container: checked when the run lists it
            source = dataset.source.path
            if not source.is_dir():
                what = "is not a directory" if source.exists() else "does not exist"
                problems.append((f"datasets[{index}].source.path", f"{source} {what}"))
        if problems:
            raise plan_error(shown, problems)
    return plan

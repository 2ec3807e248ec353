"""migrator: encrypted, resumable data migration into sovereign clouds.

The front door for code that drives a migration instead of typing `migrator` commands (the
Dagster wiring in pipelines/, the benchmarks, scripts):

    plan = migrator.load_plan("plan.yaml")
    report = migrator.run(plan)                  # rerun to resume
    assert migrator.verify(plan, sample=0.02).ok
    migrator.restore(plan, "user_profiles", "restored/")
    ready = migrator.cutover(plan).ready
    where = migrator.progress(plan)

Each call takes a `Plan`, and opens its destination, keys and state store as the command line
does (residency and FIPS checked first), or a `Connection` the caller opened: `connect(plan)`
for several calls over one state store, or stand-ins for a dry run (migrator.demo.standins).

Importing the package loads nothing else: each call imports what it uses, and the types below
are imported on first use, so `import migrator.sizes` costs no more than that module.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from migrator.errors import MigratorError
    from migrator.keys.provider import KeyProvider
    from migrator.landing.engine import LandReport
    from migrator.landing.proof import LandedShard
    from migrator.landing.targets import DatasetTargets, OpenStore, TableUrl
    from migrator.plan.model import DatasetPlan, Plan
    from migrator.read.cutover import CutoverReport
    from migrator.read.restore import RestoreReport
    from migrator.read.status import DatasetStatus, PlanStatus
    from migrator.read.verify import Problem, VerifyReport
    from migrator.sources.base import SourceObject
    from migrator.state.db import StateDB
    from migrator.state.model import GenerationRow, ShardHeadRow
    from migrator.stores.base import ObjectStore
    from migrator.write.reports import DatasetReport, ProgressSink, RunReport

__all__ = [
    "Connection",
    "CutoverReport",
    "DatasetPlan",
    "DatasetReport",
    "DatasetStatus",
    "LandReport",
    "LandedShard",
    "MigratorError",
    "Plan",
    "Problem",
    "Progress",
    "ProgressSink",
    "RestoreReport",
    "RunReport",
    "SourceObject",
    "Traffic",
    "VerifyReport",
    "check_landing",
    "connect",
    "cutover",
    "is_manifest_problem",
    "land",
    "list_source",
    "load_plan",
    "progress",
    "restore",
    "run",
    "verify",
]

_T = TypeVar("_T")

# Where each type a caller meets lives; resolved by __getattr__ on first use.
_TYPES = {
    "CutoverReport": "migrator.read.cutover",
    "DatasetPlan": "migrator.plan.model",
    "DatasetReport": "migrator.write.reports",
    "DatasetStatus": "migrator.read.status",
    "LandReport": "migrator.landing.engine",
    "LandedShard": "migrator.landing.proof",
    "MigratorError": "migrator.errors",
    "Plan": "migrator.plan.model",
    "Problem": "migrator.read.verify",
    "ProgressSink": "migrator.write.reports",
    "RestoreReport": "migrator.read.restore",
    "RunReport": "migrator.write.reports",
    "SourceObject": "migrator.sources.base",
    "VerifyReport": "migrator.read.verify",
}


def __getattr__(name: str) -> Any:
    home = _TYPES.get(name)
    if home is None:
        raise AttributeError(f"module 'migrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def load_plan(path: str | Path, *, check_sources: bool = True) -> Plan:
    """The plan file, validated. `check_sources=False` leaves local sources unchecked: they may
    be mounted only where the shards run."""
    from migrator.plan.model import load_plan as load

    return load(path, check_sources=check_sources)


def list_source(dataset: DatasetPlan) -> Iterator[SourceObject]:
    """The dataset's source objects (name, size, version), as a run lists them: its `include`
    patterns applied."""
    from migrator.sources.factory import open_source

    return open_source(dataset).list()


@dataclass(frozen=True, slots=True)
class Traffic:
    """What a connection's store has sent so far: requests by type, and bytes."""

    requests: dict[str, int]
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class Connection:
    """A plan joined to what it goes through: its destination, its keys, its state store.

    `plan` is the plan as these see it (a dry run's keeps its state apart from the real run's).
    `state` is None when opened for reading before any run made one: readers then work from
    the destination alone; a run needs one.
    """

    plan: Plan
    store: ObjectStore
    keys: KeyProvider
    state: StateDB | None = None
    # Open landing buckets' stores, tables' URLs (None: as the plan says); a demo's, a dry run's.
    landing_store: OpenStore | None = None
    table_url: TableUrl | None = None

    def landing_targets(self, plan: Plan, ds: DatasetPlan) -> DatasetTargets:
        """The dataset's landing targets, through this connection's landing stores."""
        from migrator.landing.targets import open_targets

        return open_targets(plan, ds, self.landing_store, self.table_url)

    def traffic(self) -> Traffic:
        """Requests and bytes the store sent: only a connection opened to count them knows."""
        from migrator.errors import UsageError
        from migrator.stores.wrappers import CountingStore

        if not isinstance(self.store, CountingStore):
            raise UsageError("this connection does not count its traffic: connect(count_traffic)")
        return Traffic(dict(self.store.requests), self.store.bytes_sent)


@contextlib.contextmanager
def connect(
    plan: Plan,
    *,
    bandwidth_limit: int | None = None,
    create_state: bool = True,
    count_traffic: bool = False,
) -> Iterator[Connection]:
    """The plan's own destination, keys and state store, once its residency and FIPS checks
    pass. `bandwidth_limit` (bytes a second) replaces the plan's for this process's uploads;
    `create_state=False` opens the state store only if a run made one; `count_traffic` counts
    what the store sends (`Connection.traffic`). The state store closes on leaving."""
    from migrator.residency import enforce_residency
    from migrator.stores.wrappers import CountingStore
    from migrator.wiring import open_existing_state, open_key_provider, open_state, open_store

    enforce_residency(plan)  # before anything is opened, so a refusal leaves no trace
    store = open_store(plan, bandwidth_limit=bandwidth_limit)
    if count_traffic:
        store = CountingStore(store)
    state = open_state(plan) if create_state else open_existing_state(plan)
    with contextlib.ExitStack() as stack:
        if state is not None:
            stack.enter_context(state)
        yield Connection(plan, store, open_key_provider(plan), state)


@contextlib.contextmanager
def _connected(target: Plan | Connection, *, create_state: bool) -> Iterator[Connection]:
    if isinstance(target, Connection):
        yield target
    else:
        with connect(target, create_state=create_state) as conn:
            yield conn


def _chosen(items: Iterable[_T] | None) -> set[_T] | None:
    return None if items is None else set(items)


def run(
    target: Plan | Connection,
    datasets: Iterable[str] | None = None,
    shards: Iterable[int] | None = None,
    *,
    progress: ProgressSink | None = None,
) -> RunReport:
    """Migrate the datasets (default: all) into the destination, every shard or only `shards`
    (one Dagster partition): the bulk generation first, an incremental sync on every later
    call. Shards are leased in the state store; a rerun resumes where a run stopped."""
    from migrator.errors import UsageError
    from migrator.write.run import MigrationRun

    with _connected(target, create_state=True) as conn:
        if conn.state is None:
            raise UsageError("a run needs a state store: connect the plan with create_state")
        job = MigrationRun(conn.plan, conn.store, conn.keys, conn.state, progress)
        return job.run(_chosen(datasets), _chosen(shards))


def verify(
    target: Plan | Connection,
    datasets: Iterable[str] | None = None,
    shards: Iterable[int] | None = None,
    *,
    sample: float = 1.0,
    seed: int | None = None,
    workers: int = 4,
    quick: bool = False,
) -> VerifyReport:
    """Read the destination back: every manifest authenticated, every listed chunk present and
    nothing unlisted, and `sample` of the chunks (at least one a shard) decrypted and compared
    with their digests (`quick`: HEAD each object instead of reading it)."""
    from migrator.read.verify import Verifier

    with _connected(target, create_state=False) as conn:
        verifier = Verifier(
            conn.plan,
            conn.store,
            conn.keys,
            conn.state,
            sample=sample,
            seed=seed,
            workers=workers,
            quick=quick,
        )
        return verifier.verify(_chosen(datasets), _chosen(shards))


def restore(
    target: Plan | Connection,
    dataset: str,
    out: str | Path,
    generation: int | None = None,
    *,
    workers: int = 4,
    allow_rollback: bool = False,
) -> RestoreReport:
    """Rebuild one dataset from the destination into `out`, as of its latest committed
    generation (or `generation`); refuses a destination older than the state store knows
    committed unless `allow_rollback`."""
    from migrator.read.restore import Restorer

    with _connected(target, create_state=False) as conn:
        restorer = Restorer(
            conn.plan,
            conn.store,
            conn.keys,
            workers=workers,
            state=conn.state,
            allow_rollback=allow_rollback,
        )
        return restorer.restore(dataset, Path(out), generation)


def land(
    target: Plan | Connection,
    datasets: Iterable[str] | None = None,
    shards: Iterable[int] | None = None,
    *,
    worker: bool = False,
    workers: int = 4,
) -> list[LandReport]:
    """Apply the archive's committed generations to the datasets' landing targets (default:
    every dataset with a `landing`), every shard or only `shards`; a rerun resumes."""
    from migrator.errors import UsageError
    from migrator.landing.engine import Lander

    with _connected(target, create_state=True) as conn:
        if conn.state is None:
            raise UsageError("landing needs a state store: connect the plan with create_state")
        lander = Lander(conn.plan, conn.store, conn.keys, conn.state, conn.landing_targets)
        lander.workers = workers
        return lander.land(_chosen(datasets), _chosen(shards), worker=worker)


def check_landing(
    target: Plan | Connection,
    datasets: Iterable[str] | None = None,
    shards: Iterable[int] | None = None,
) -> list[LandedShard]:
    """Per shard and landing target: the digest and count the target holds, read from the
    target itself, against the archive's (`LandedShard.match`)."""
    from migrator.landing.proof import check_landing as checked

    with _connected(target, create_state=False) as conn:
        opened = (conn.plan, conn.store, conn.keys)
        chosen = (_chosen(datasets), _chosen(shards))
        found = checked(*opened, *chosen, conn.state, conn.landing_targets)
        return [shard for dataset in found for shard in dataset]


def cutover(target: Plan | Connection, datasets: Iterable[str] | None = None) -> CutoverReport:
    """The cutover gate's report: per shard, the source's digest against the destination's
    (from the manifests, no data read back), the lag a sync would still write, and an estimate
    of the write freeze; a dataset's landed copy too. `ready` only when every shard matches."""
    from migrator.read.cutover import CutoverGate

    with _connected(target, create_state=False) as conn:
        gate = CutoverGate(
            conn.plan, conn.store, conn.keys, conn.state, open_targets=conn.landing_targets
        )
        return gate.check(_chosen(datasets))


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a plan stands in its state store: `migrator status`'s figures per dataset and
    shard, and each shard's newest stored manifest."""

    status: PlanStatus
    heads: dict[str, dict[int, ShardHeadRow]]  # dataset -> shard -> newest stored manifest

    def dataset(self, name: str) -> DatasetStatus | None:
        """None until a run made the state store."""
        return next((d for d in self.status.datasets if d.name == name), None)

    def committed(self, name: str) -> list[GenerationRow]:
        """The dataset's committed generations, oldest first: restore sees the newest."""
        found = self.dataset(name)
        return [g for g in found.generations if g.committed] if found is not None else []

    def shards_complete(self, name: str) -> int:
        """Shards complete in the dataset's latest generation."""
        found = self.dataset(name)
        return found.shards_complete if found is not None else 0

    def live_records(self, name: str) -> int:
        """Records the dataset's shards hold after their newest stored manifests."""
        return sum(head.live_records for head in self.heads.get(name, {}).values())

    def manifest_key(self, name: str, shard: int) -> str:
        """The shard's newest stored manifest; before one is stored, the bulk generation's."""
        from migrator.repository.names import manifest_key
        from migrator.write.generation import BULK_GENERATION

        head = self.heads.get(name, {}).get(shard)
        return head.manifest_key if head is not None else manifest_key(name, BULK_GENERATION, shard)


def progress(target: Plan | Connection) -> Progress:
    """The plan's progress from its state store; not started while no run has made one."""
    from migrator.wiring import open_existing_state

    if isinstance(target, Connection):
        return _progress(target.plan, target.state)
    opened = open_existing_state(target)
    if opened is None:
        return _progress(target, None)
    with opened as state:
        return _progress(target, state)


def _progress(plan: Plan, state: StateDB | None) -> Progress:
    from migrator.read.status import plan_status

    status = plan_status(plan, state)
    if state is None:
        return Progress(status, {})
    return Progress(status, {ds.name: state.latest_heads(ds.name) for ds in plan.datasets})


def is_manifest_problem(problem: Problem) -> bool:
    """A verify problem of a shard's manifest, of a generation record, or of the data key (no
    shard): nothing the shard lists can then be trusted, whichever check looks at it."""
    from migrator.repository.names import MANIFEST_NAME, generations_prefix

    key = problem.object_key or ""
    return (
        problem.shard is None
        or key.endswith(f"/{MANIFEST_NAME}")
        or generations_prefix(problem.dataset) in key
    )

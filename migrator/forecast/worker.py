"""A worker's rates: source bytes a second that one `migrator` process running shards moves end
to end (one Dagster run in the destination's pool), and the part of it a records run spends
routing; given, or measured now on this machine with short local-to-local runs of the real
engine on synthetic data (a bulk of each kind, then a records sync with nothing changed)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from migrator import Connection, run
from migrator.errors import MigratorError
from migrator.forecast.phases import PhaseClock
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.plan.model import (
    DatasetKind,
    DatasetPlan,
    LocalDestinationPlan,
    LocalSourcePlan,
    Plan,
    StoreKind,
)
from migrator.sizes import MiB
from migrator.state.db import StateDB
from migrator.stores.local import LocalStore

# Enough data that a run's fixed costs (keys, manifests, process pools) are a small share of
# it, small enough that generating and migrating both kinds stays well under ten seconds.
MEASURE_BYTES = 96 * MiB
MEASURE_SHARDS = 8
MEASURE_SEED = 7
# A records run's time spent routing, where none was measured: bench/phases.py timed routing at
# 4.2 s of a 5.9 s run of 512 MiB (docs/PERFORMANCE.md).
ROUTING_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class WorkerRates:
    """Source bytes a second one worker moves end to end, by dataset kind."""

    records: float
    objects: float
    measured_seconds: float | None  # None: given; else the whole measurement, data included
    cpus: int  # of the machine that measured them
    load: float = 0.0  # its 1-minute load average as the measurement began
    sample_bytes: int = 0  # of each kind, when measured
    routing: float | None = None  # records bytes a second routed (measured); None: assumed
    sync_seconds: float | None = None  # a records sync with nothing changed (measured)

    @property
    def contended(self) -> bool:
        """Other work held a share of the CPUs: measured rates are then too low."""
        return self.measured_seconds is not None and self.load > self.cpus / 2

    def of(self, kind: DatasetKind) -> float:
        return self.records if kind == DatasetKind.RECORDS else self.objects

    @property
    def routing_rate(self) -> float:
        """Records bytes a second one worker routes: measured, else ROUTING_SHARE of the
        records rate's time."""
        return self.routing if self.routing else self.records / ROUTING_SHARE

    @property
    def records_encoding(self) -> float:
        """Records bytes a second one worker encodes and stores once routed: the end-to-end
        time less the routing time, so that routing and encoding add up to the records rate."""
        if not self.records:
            return 0.0
        rest = 1 / self.records - 1 / self.routing_rate
        return 1 / rest if rest > 0 else self.records


def given_rates(rate: int) -> WorkerRates:
    return WorkerRates(float(rate), float(rate), None, os.cpu_count() or 1)


def measure_worker_rates(plan: Plan, size: int = MEASURE_BYTES) -> WorkerRates:
    """Time the real engine, one run a kind, local folder to local folder in a temp dir.

    The runs take the plan's compression level, chunk and part sizes, memory budget and
    encoding processes, so the rate is this machine's for this plan; not its bandwidth_limit,
    which the estimate applies on its own. Generating the data is not part of the rates.
    """
    # The generator builds its word tables on import: only a measurement pays for them.
    from migrator.demo.synth import generate_objects, generate_records_file

    load = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="migrator-rate-") as tmp:
        root = Path(tmp)
        generate_records_file(root / "src" / "records" / "profiles.jsonl", size, MEASURE_SEED)
        generate_objects(root / "src" / "objects", size, MEASURE_SEED)
        init_kek_file(root / "kek.key")
        provider = LocalKeyProvider(root / "kek.key")
        records = _timed_run(plan, root, DatasetKind.RECORDS, provider)
        objects = _timed_run(plan, root, DatasetKind.OBJECTS, provider)
    seconds = time.perf_counter() - started
    cpus = os.cpu_count() or 1
    return WorkerRates(
        records.rate,
        objects.rate,
        seconds,
        cpus,
        load,
        size,
        routing=records.routing,
        sync_seconds=records.sync_seconds,
    )


@dataclass(frozen=True, slots=True)
class _Timed:
    rate: float  # source bytes a second, end to end
    routing: float | None  # records: bytes a second through the routing phase
    sync_seconds: float | None  # records: a sync that finds nothing changed


def _timed_run(plan: Plan, root: Path, kind: DatasetKind, provider: KeyProvider) -> _Timed:
    """One run of the public `migrator.run`, into a folder, its state in a file of its own:
    never the plan's destination, key service or state store. Records: its routing phase
    timed, then a second run, a sync that finds nothing changed, timed whole."""
    source = LocalSourcePlan(kind=StoreKind.LOCAL, path=root / "src" / kind)
    if kind is DatasetKind.RECORDS:
        ds = DatasetPlan(
            name=kind.value,
            kind=DatasetKind.RECORDS,
            source=source,
            shards=MEASURE_SHARDS,
            format="jsonl",
            key="user_id",
        )
    else:
        part = next((d.part_size for d in plan.datasets if d.part_size), plan.chunk_size)
        ds = DatasetPlan(
            name=kind.value,
            kind=DatasetKind.OBJECTS,
            source=source,
            shards=MEASURE_SHARDS,
            part_size=part,
        )
    dest = root / "dest" / kind
    run_plan = plan.model_copy(
        update={
            "name": "rate",
            "state_dir": root / "state" / kind,
            "bandwidth_limit": None,
            "destination": LocalDestinationPlan(kind=StoreKind.LOCAL, path=dest),
            "datasets": (ds,),
        }
    )
    clock = PhaseClock()
    sync_seconds = None
    with StateDB.sqlite_file(root / "state" / f"{kind}.sqlite") as state:
        connection = Connection(run_plan, LocalStore(dest), provider, state)
        t0 = time.perf_counter()
        report = run(connection, progress=clock)
        seconds = time.perf_counter() - t0
        clock.stop()
        if kind is DatasetKind.RECORDS:
            t0 = time.perf_counter()
            run(connection)
            sync_seconds = time.perf_counter() - t0
    if not report.bytes_in or seconds <= 0:
        raise MigratorError(f"measuring a worker: the {kind} run moved no data")
    return _Timed(report.bytes_in / seconds, clock.rate(kind.value, "routing"), sync_seconds)

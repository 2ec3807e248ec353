"""`migrator run PLAN --dry-run`: the same code path, with the plan's clouds swapped for local
stand-ins (moto for S3 and KMS, Azurite for Blob) on 127.0.0.1, every chunk read back, and a
forecast of the real run. `migrator land PLAN --dry-run` rehearses the same run, then lands it
into stand-ins too (a private PostgreSQL for tables) and proves the landing: the emulators, and
with them the archive a dry run wrote, end with each command, so a landing needs its own run.

Nothing is sent to the plan's real destination, key service, landing buckets or databases. The
rehearsal's state lives in `STATE_DIR/dry-run`, apart from the real run's.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrator import Connection, check_landing, land
from migrator.codec.chunk import ChunkEncoder
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.demo.sample import write_sample
from migrator.demo.standins import StandIns
from migrator.errors import MigratorError
from migrator.forecast.model import DatasetVolume, Forecast, forecast, records_chunks
from migrator.forecast.phases import PhaseClock
from migrator.keys.datakey import DataKey
from migrator.plan.model import (
    AzureDestinationPlan,
    DatasetKind,
    DatasetPlan,
    LocalSourcePlan,
    Plan,
    S3DestinationPlan,
    StoreKind,
)
from migrator.read.verify import Verifier, VerifyReport
from migrator.repository.names import dry_run_dir, dry_run_sample
from migrator.residency import ResidencyCheck
from migrator.sizes import MiB, format_size
from migrator.sources.base import Source
from migrator.sources.factory import open_source
from migrator.sources.local import LocalSource
from migrator.stores.wrappers import CountingStore
from migrator.write.reports import DatasetReport, ProgressSink, RunReport
from migrator.write.run import MigrationRun

if TYPE_CHECKING:
    from migrator.landing.engine import LandReport
    from migrator.landing.proof import LandedShard

DEFAULT_SAMPLE = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Sizing:
    real_bytes: int  # the real source's size (listed, or the plan's expected_size)
    parts: int  # object parts, when the real source was listed; 0 when unknown
    encode_rate: float  # bytes a second through this machine's hot loop on this data
    files: int | None = None  # the real source's, when listed or expected


RATE_SAMPLE = 32 * 1024 * 1024


def _encode_rate(source: Source, plan: Plan) -> float:
    """The hot loop (xxh3 → zstd → AES-GCM) over every core on up to 32 MiB of the data."""
    buf = bytearray()
    for obj in source.list():
        take = min(obj.size, RATE_SAMPLE - len(buf))
        if take:
            buf += source.read_range(obj, 0, take)
        if len(buf) >= RATE_SAMPLE:
            break
    if not buf:
        return 0.0
    size = min(plan.chunk_size, max(1, len(buf) // 4))
    chunks = [memoryview(buf)[i : i + size] for i in range(0, len(buf), size)]
    key = DataKey(os.urandom(32))
    local = threading.local()

    def seal(index: int) -> None:
        enc = getattr(local, "enc", None) or ChunkEncoder(plan.compression_level)
        local.enc = enc
        ident = ChunkIdentity(ChunkKind.RECORDS, plan.name, "rate", 1, 0, index)
        enc.encode(chunks[index], ident, key)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(seal, range(len(chunks))))
    return len(buf) / (time.perf_counter() - started)


@dataclass
class DryRunReport:
    plan: str
    destination: str
    residency: list[ResidencyCheck]
    substitutions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run: RunReport | None = None
    verify: VerifyReport | None = None
    requests: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    forecast: Forecast | None = None
    bandwidth_limit: int | None = None
    landed: list[LandReport] = field(default_factory=list)  # `land --dry-run` only
    landing: list[LandedShard] = field(default_factory=list)  # its proof, shard by shard


class Rehearsal:
    def __init__(
        self,
        plan: Plan,
        *,
        synthetic_size: int = DEFAULT_SAMPLE,
        allow_loopback: bool = False,
        progress: ProgressSink | None = None,
        land: set[str] | None = None,
        tables: bool = True,
    ) -> None:
        """`land`: after the run, land these datasets (empty: every one with a landing) into
        stand-ins and prove them; `tables=False` lands tables' records as files instead."""
        self.plan = plan
        self.synthetic_size = synthetic_size
        self.allow_loopback = allow_loopback
        self.progress = progress
        self.land = land
        self.tables = tables
        self.workdir = dry_run_dir(plan.state_dir)

    def run(self) -> DryRunReport:
        stand_ins = StandIns(
            self.plan, self.workdir, allow_loopback=self.allow_loopback, tables=self.tables
        )
        report = DryRunReport(self.plan.name, stand_ins.destination, stand_ins.residency)
        report.bandwidth_limit = self.plan.bandwidth_limit
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        datasets, sizing = self._datasets(report)
        plan = stand_ins.plan.model_copy(update={"datasets": datasets})
        if self.land is not None:  # a missing PostgreSQL is said before anything runs
            plan = stand_ins.landing_plan(plan)
        with stand_ins:
            store = CountingStore(stand_ins.store())
            provider = stand_ins.keys()
            with stand_ins.state() as state:
                clock = PhaseClock(self.progress)  # times routing, for the forecast
                run = MigrationRun(plan, store, provider, state, clock).run()
                clock.stop()
                requests = dict(store.requests)
                bytes_sent = store.bytes_sent
                verify = Verifier(plan, store, provider, state, sample=1.0, workers=4).verify()
                if self.land is not None and verify.ok:
                    conn = Connection(
                        plan,
                        store,
                        provider,
                        state,
                        landing_store=stand_ins.landing_store,
                        table_url=stand_ins.table_url,
                    )
                    self._land(report, conn)
            report.substitutions += stand_ins.substitutions
        report.run, report.verify = run, verify
        report.requests, report.bytes_sent = requests, bytes_sent
        f = self.plan.forecast
        prices = None
        if f.storage_usd_per_gb_month is not None and f.put_usd_per_1000 is not None:
            prices = (f.storage_usd_per_gb_month, f.put_usd_per_1000, f.get_usd_per_1000 or 0.0)
        dest = self.plan.destination
        threshold, part_size = None, 16 * MiB
        if isinstance(dest, S3DestinationPlan | AzureDestinationPlan):
            threshold = dest.multipart_threshold or 64 * MiB
            part_size = dest.upload_part_size or 16 * MiB
        volumes = [
            self._volume(ds, sizing[ds.name], dr, clock.rate(ds.name, "routing"))
            for ds, dr in zip(plan.datasets, run.datasets, strict=True)
        ]
        report.forecast = forecast(
            volumes,
            kind=dest.kind,
            bandwidth=f.bandwidth,
            machine_limit=self.plan.bandwidth_limit,
            multipart_threshold=threshold,
            part_size=part_size,
            prices=prices,
            sync_change=f.sync_change,
        )
        return report

    def _land(self, report: DryRunReport, conn: Connection) -> None:
        """Land the rehearsal's archive into the stand-ins, then prove it from them."""
        only = self.land or None
        report.landed = land(conn, only)
        report.landing = check_landing(conn, only)

    def _volume(
        self, ds: DatasetPlan, sizing: _Sizing, dr: DatasetReport, routing: float | None
    ) -> DatasetVolume:
        if ds.kind is DatasetKind.RECORDS:
            chunks = records_chunks(sizing.real_bytes, ds.shards, self.plan.chunk_size)
        else:
            part = ds.part_size or self.plan.chunk_size
            chunks = sizing.parts if sizing.parts else max(1, -(-sizing.real_bytes // part))
        return DatasetVolume(
            name=ds.name,
            kind=ds.kind,
            source_bytes=sizing.real_bytes,
            shards=ds.shards,
            chunks=chunks,
            compression=dr.compression_ratio or 1.0,
            encode_rate=sizing.encode_rate,
            files=sizing.files,
            routing_rate=routing or 0.0,
            record_bytes=dr.bytes_in / dr.records if dr.records else 0.0,
            source_kind=self.plan.dataset(ds.name).source.kind,
        )

    # --- sources: the real ones where reachable, else a sample of the same shape ---------

    def _datasets(self, report: DryRunReport) -> tuple[tuple[DatasetPlan, ...], dict[str, _Sizing]]:
        out: list[DatasetPlan] = []
        sizing: dict[str, _Sizing] = {}
        for ds in self.plan.datasets:
            part = ds.part_size or self.plan.chunk_size
            try:
                source = open_source(ds)
                total = parts = files = 0
                for obj in source.list():
                    total += obj.size
                    parts += max(1, -(-obj.size // part))
                    files += 1
                out.append(ds)
                sizing[ds.name] = _Sizing(total, parts, _encode_rate(source, self.plan), files)
                continue
            except MigratorError as exc:
                reason = str(exc)
            folder = dry_run_sample(self.workdir, ds.name)
            write_sample(ds, folder, self.synthetic_size)
            sample = LocalSource(folder)
            real = ds.expected_size or self.synthetic_size
            # Real object sizes are unknown: the forecast counts full parts only (a floor).
            rate = _encode_rate(sample, self.plan)
            sizing[ds.name] = _Sizing(real, 0, rate, ds.expected_files)
            report.notes.append(
                f"{ds.name}: source out of reach ({reason}); rehearsed on a"
                f" {format_size(self.synthetic_size)} synthetic sample of the same shape;"
                f" forecast for {'its expected_size' if ds.expected_size else 'the sample only'}"
            )
            out.append(
                ds.model_copy(
                    update={
                        "source": LocalSourcePlan(kind=StoreKind.LOCAL, path=folder),
                        "include": None,
                    }
                )
            )
        return tuple(out), sizing

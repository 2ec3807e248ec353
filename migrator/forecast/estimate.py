"""`migrator plan` estimates: chunks and bytes from file sizes alone, never reading data.

`plan --estimate` goes further without listing what cannot be listed from here: it sizes each
dataset from its `expected_size` (listing only local sources that have none), then forecasts
Dagster partitions, requests, time at N workers and cost. A worker is one `migrator` process
running shards (one Dagster run in the destination's pool); its rate is either given or
measured now on this machine with a short local-to-local run of the real engine.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrator.errors import MigratorError, PlanError
from migrator.forecast.model import (
    ASSUMED_PRICES,
    DatasetVolume,
    Forecast,
    forecast,
    puts_per_chunk,
    records_chunks,
)
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetPlan, DestinationPlan, Plan, SourcePlan
from migrator.sizes import MiB, format_size
from migrator.sources.factory import open_source
from migrator.stores.base import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE

# Typical zstd ratios measured on this kind of data (records: JSON/CSV; objects: video).
RECORDS_RATIO = 4.0
OBJECTS_RATIO = 1.0

# Enough data that a run's fixed costs (keys, manifests, process pools) are a small share of
# it, small enough that generating and migrating both kinds stays well under ten seconds.
MEASURE_BYTES = 96 * MiB
MEASURE_SHARDS = 8
MEASURE_SEED = 7


@dataclass(frozen=True, slots=True)
class DatasetEstimate:
    dataset: str
    kind: str
    shards: int
    files: int | None  # None: not listed, sized from the plan's expected_size
    bytes: int
    chunks: int
    stored_bytes: int


def _dataset_estimate(
    plan: Plan, ds: DatasetPlan, files: int | None, total: int, parts: int
) -> DatasetEstimate:
    if ds.kind == "records":
        chunks = records_chunks(total, ds.shards, plan.chunk_size) if total else 0
        return DatasetEstimate(
            ds.name, ds.kind, ds.shards, files, total, chunks, int(total / RECORDS_RATIO)
        )
    return DatasetEstimate(
        ds.name, ds.kind, ds.shards, files, total, parts, int(total / OBJECTS_RATIO)
    )


def _listed(plan: Plan, ds: DatasetPlan) -> DatasetEstimate:
    files = total = parts = 0
    part = ds.part_size or plan.chunk_size
    for f in open_source(ds).list():
        files += 1
        total += f.size
        parts += max(1, -(-f.size // part))
    return _dataset_estimate(plan, ds, files, total, parts)


def estimate_plan(plan: Plan) -> list[DatasetEstimate]:
    """Every dataset listed, wherever its source is."""
    return [_listed(plan, ds) for ds in plan.datasets]


def size_plan(plan: Plan) -> list[DatasetEstimate]:
    """Each dataset from its expected_size, or listed if it is a local folder without one.

    A petabyte bucket takes hours to list and the credentials may not be here: a cloud source
    must state its size. Objects sized so count full parts only, a floor: every file's last
    part is partly full, so a real count is higher by up to one part a file.
    """
    out = []
    for index, ds in enumerate(plan.datasets):
        if ds.expected_size is not None:
            part = ds.part_size or plan.chunk_size
            parts = -(-ds.expected_size // part)
            out.append(_dataset_estimate(plan, ds, None, ds.expected_size, parts))
            continue
        field = f"datasets[{index}].expected_size"
        if ds.source.kind != "local":
            raise PlanError(
                str(plan.plan_path),
                field,
                f"dataset {ds.name!r} reads from {ds.source.kind} (bucket {ds.source.bucket!r}),"
                " which `plan --estimate` does not list; set its expected_size to the source's"
                " size, e.g. '500GB'",
            )
        assert ds.source.path is not None  # the plan model requires it
        if not ds.source.path.is_dir():
            raise PlanError(
                str(plan.plan_path),
                f"datasets[{index}].source.path",
                f"{ds.source.path} does not exist; mount it, or set {field} to estimate without it",
            )
        out.append(_listed(plan, ds))
    return out


# --- a worker's rate --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerRates:
    """Source bytes a second one worker moves end to end, by dataset kind."""

    records: float
    objects: float
    measured_seconds: float | None  # None: given; else the whole measurement, data included
    cpus: int  # of the machine that measured them
    load: float = 0.0  # its 1-minute load average as the measurement began
    sample_bytes: int = 0  # of each kind, when measured

    @property
    def contended(self) -> bool:
        """Other work held a share of the CPUs: measured rates are then too low."""
        return self.measured_seconds is not None and self.load > self.cpus / 2

    def of(self, kind: str) -> float:
        return self.records if kind == "records" else self.objects


def given_rates(rate: int) -> WorkerRates:
    return WorkerRates(float(rate), float(rate), None, os.cpu_count() or 1)


def measure_worker_rates(plan: Plan, size: int = MEASURE_BYTES) -> WorkerRates:
    """Time the real engine, one run a kind, local folder to local folder in a temp dir.

    The runs take the plan's compression level, chunk and part sizes, memory budget and
    encoding processes, so the rate is this machine's for this plan; not its bandwidth_limit,
    which the estimate applies on its own. Generating the data is not part of the rates.
    """
    from migrator.demo.synth import generate_objects, generate_records_file
    from migrator.keys.local import LocalKeyProvider, init_kek_file

    load = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="migrator-rate-") as tmp:
        root = Path(tmp)
        generate_records_file(root / "src" / "records" / "profiles.jsonl", size, MEASURE_SEED)
        generate_objects(root / "src" / "objects", size, MEASURE_SEED)
        init_kek_file(root / "kek.key")
        provider = LocalKeyProvider(root / "kek.key")
        rates = {kind: _timed_run(plan, root, kind, provider) for kind in ("records", "objects")}
    seconds = time.perf_counter() - started
    cpus = os.cpu_count() or 1
    return WorkerRates(rates["records"], rates["objects"], seconds, cpus, load, size)


def _timed_run(plan: Plan, root: Path, kind: str, provider: KeyProvider) -> float:
    from migrator.state.store import StateDB
    from migrator.stores.local import LocalStore
    from migrator.write.run import MigrationRun

    source = SourcePlan(kind="local", path=root / "src" / kind)
    if kind == "records":
        ds = DatasetPlan(
            name=kind,
            kind="records",
            source=source,
            shards=MEASURE_SHARDS,
            format="jsonl",
            key="user_id",
        )
    else:
        part = next((d.part_size for d in plan.datasets if d.part_size), plan.chunk_size)
        ds = DatasetPlan(
            name=kind, kind="objects", source=source, shards=MEASURE_SHARDS, part_size=part
        )
    dest = root / "dest" / kind
    run_plan = plan.model_copy(
        update={
            "name": "rate",
            "state_dir": root / "state" / kind,
            "bandwidth_limit": None,
            "destination": DestinationPlan(kind="local", path=dest),
            "datasets": (ds,),
        }
    )
    with StateDB.sqlite_file(root / "state" / f"{kind}.sqlite") as state:
        t0 = time.perf_counter()
        report = MigrationRun(run_plan, LocalStore(dest), provider, state).run()
        seconds = time.perf_counter() - t0
    if not report.bytes_in or seconds <= 0:
        raise MigratorError(f"measuring a worker: the {kind} run moved no data")
    return report.bytes_in / seconds


# --- the estimate -----------------------------------------------------------------------


def _both(n: int) -> str:
    """Binary units as elsewhere, and decimal ones, as disks and bills are counted."""
    value, unit = n / 1e3, "kB"
    for bigger in ("MB", "GB", "TB", "PB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{format_size(n)} ({value:,.2f} {unit})"


@dataclass(frozen=True, slots=True)
class PlanEstimate:
    """What a run of the whole plan takes at `workers` workers, and what it costs."""

    plan: str
    destination: str
    datasets: tuple[DatasetEstimate, ...]
    workers: int
    rates: WorkerRates
    forecast: Forecast
    link: int | None  # bytes a second into the destination; None: no link bound
    link_from_plan: bool  # False: forecast.bandwidth's default
    upload_cap: int | None  # each worker's bandwidth_limit
    rate_seconds: float  # source bytes over the workers' rate
    cap_seconds: float  # stored bytes over the workers' upload caps
    worker_seconds: float  # per dataset the slower of those two, summed
    link_seconds: float  # stored bytes over the link
    prices_from_plan: tuple[bool, bool, bool]  # storage, PUT, GET
    multipart: tuple[int | None, int]  # threshold (None: never), part size

    def puts(self, d: DatasetEstimate) -> int:
        """One dataset's PUT-class requests, counted as forecast.py counts the plan's."""
        per_chunk = puts_per_chunk(d.stored_bytes / max(1, d.chunks), *self.multipart)
        return d.chunks * per_chunk + d.shards + 1

    @property
    def seconds(self) -> float:
        """The slower bound: more workers shorten theirs, only a wider link the other."""
        return max(self.worker_seconds, self.link_seconds)

    @property
    def bound(self) -> str:
        if self.link_seconds and self.link_seconds >= self.worker_seconds:
            return "link"
        return "upload cap" if self.cap_seconds > self.rate_seconds else "workers"

    @property
    def workers_to_fill_link(self) -> int | None:
        """Workers beyond this only wait for the link."""
        if not self.link_seconds:
            return None
        return max(1, math.ceil(self.workers * self.worker_seconds / self.link_seconds))

    @property
    def dagster_partitions(self) -> int:
        return sum(d.shards for d in self.datasets)

    def summary_rows(self) -> list[tuple[str, str]]:
        """The whole plan's numbers as (what, value) lines; each time says how it is reached."""
        f, n = self.forecast, self.workers

        def span(seconds: float) -> str:
            return f"{seconds / 3600:,.1f} h ({seconds / 86400:,.1f} days)"

        r = self.rates
        if r.records == r.objects:
            rate = f"{r.records / 1e6:,.0f} MB/s"
        else:
            rate = f"records {r.records / 1e6:,.0f} MB/s, objects {r.objects / 1e6:,.0f} MB/s"
        rate += " (given)" if r.measured_seconds is None else " (measured)"
        rows = [
            ("Dagster partitions (shards), all datasets", f"{self.dagster_partitions:,}"),
            ("chunks, all datasets", f"{f.chunks:,}"),
            ("state store rows", f"{f.chunks:,} chunks, {self.dagster_partitions:,} shards"),
            ("source", _both(f.source_bytes)),
            ("stored at the destination", _both(f.stored_bytes)),
            ("PUT-class requests", f"{f.put_requests:,} (${f.request_usd:,.2f})"),
            ("per-worker rate", rate),
            (f"time for {n} workers: source / ({n} × rate)", span(self.rate_seconds)),
        ]
        if self.upload_cap is not None:
            cap = f"{format_size(self.upload_cap)}/s"
            rows.append(
                (
                    f"time for {n} workers' upload caps: stored / ({n} × {cap})",
                    span(self.cap_seconds),
                )
            )
        if self.link is None:
            rows.append(("link to the destination", "none (a local destination)"))
        else:
            whose = "forecast.bandwidth" if self.link_from_plan else "assumed, 1 Gbit/s"
            rows.append(("link to the destination", f"{self.link / 1e6:,.0f} MB/s ({whose})"))
            rows.append(("time over the link: stored / link", span(self.link_seconds)))
        bound = {
            "link": "the link (more workers will not help)",
            "workers": "the workers' rate (more workers shorten it)",
            "upload cap": "the workers' upload cap, bandwidth_limit (more workers shorten it)",
        }[self.bound]
        rows.append((f"expected time at {n} workers", f"{span(self.seconds)}, bound by {bound}"))
        if self.workers_to_fill_link is not None:
            rows.append(("workers that keep the link full", f"{self.workers_to_fill_link:,}"))
        rows += [
            ("a full verify's GET requests", f"{f.verify_get_requests:,} (${f.verify_usd:,.2f})"),
            ("storage a month", f"${f.storage_usd_month:,.2f}"),
        ]
        return rows

    def caption(self) -> str:
        storage, put, get = self.forecast.prices
        if all(self.prices_from_plan):
            whose = "the plan's forecast section"
        elif any(self.prices_from_plan):
            whose = f"the plan's forecast section, else assumed {self.destination} list prices"
        else:
            whose = f"assumed {self.destination} list prices"
        return (
            f"prices: ${storage}/GB-month, ${put} per 1,000 PUT, ${get} per 1,000 GET ({whose});"
            f" in Dagster, a pool limit of {self.workers} runs {self.workers} workers:"
            f" dagster instance concurrency set migrator-dest-{self.plan} {self.workers}"
        )

    def as_dict(self) -> dict[str, Any]:
        f = self.forecast
        return {
            "plan": self.plan,
            "destination": self.destination,
            "workers": self.workers,
            "rates": {
                "records_bytes_per_s": round(self.rates.records),
                "objects_bytes_per_s": round(self.rates.objects),
                "measured": self.rates.measured_seconds is not None,
                "measured_seconds": self.rates.measured_seconds,
                "cpus": self.rates.cpus,
                "load": self.rates.load,
                "sample_bytes": self.rates.sample_bytes,
            },
            "datasets": [
                {
                    "dataset": d.dataset,
                    "kind": d.kind,
                    "shards": d.shards,
                    "dagster_partitions": d.shards,
                    "size_from": "listing" if d.files is not None else "expected_size",
                    "files": d.files,
                    "bytes": d.bytes,
                    "chunks": d.chunks,
                    "stored_bytes": d.stored_bytes,
                    "put_requests": self.puts(d),
                }
                for d in self.datasets
            ],
            "totals": {
                "source_bytes": f.source_bytes,
                "stored_bytes": f.stored_bytes,
                "chunks": f.chunks,
                "dagster_partitions": self.dagster_partitions,
                "put_requests": f.put_requests,
                "verify_get_requests": f.verify_get_requests,
                "state_chunk_rows": f.chunks,
                "state_shard_rows": self.dagster_partitions,
            },
            "time": {
                "seconds": self.seconds,
                "hours": self.seconds / 3600,
                "bound": self.bound,
                "worker_seconds": self.worker_seconds,
                "rate_seconds": self.rate_seconds,
                "cap_seconds": self.cap_seconds,
                "link_seconds": self.link_seconds,
                "link_bytes_per_s": self.link,
                "link_from_plan": self.link_from_plan,
                "upload_cap_bytes_per_s": self.upload_cap,
                "workers_to_fill_link": self.workers_to_fill_link,
            },
            "cost": {
                "requests_usd": f.request_usd,
                "storage_usd_month": f.storage_usd_month,
                "verify_usd": f.verify_usd,
                "prices": {
                    "storage_usd_per_gb_month": f.prices[0],
                    "put_usd_per_1000": f.prices[1],
                    "get_usd_per_1000": f.prices[2],
                },
                "prices_from_plan": dict(
                    zip(("storage", "put", "get"), self.prices_from_plan, strict=True)
                ),
            },
        }


def estimate_run(
    plan: Plan, sizes: list[DatasetEstimate], workers: int, rates: WorkerRates
) -> PlanEstimate:
    """Requests and costs from forecast.py's arithmetic; time from N workers at `rates`."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    dest = plan.destination
    cloud = dest.kind != "local"
    # A local destination has no link unless the plan names one.
    link_from_plan = "bandwidth" in plan.forecast.model_fields_set
    link = plan.forecast.bandwidth if cloud or link_from_plan else None
    cap = plan.bandwidth_limit
    volumes = [
        DatasetVolume(
            name=d.dataset,
            kind=d.kind,
            source_bytes=d.bytes,
            shards=d.shards,
            chunks=d.chunks,
            compression=RECORDS_RATIO if d.kind == "records" else OBJECTS_RATIO,
            encode_rate=workers * rates.of(d.kind),
        )
        for d in sizes
    ]
    # What a store does when the plan leaves multipart unset (stores/s3.py, stores/azure.py).
    threshold = (dest.multipart_threshold or DEFAULT_MULTIPART_THRESHOLD) if cloud else None
    part_size = dest.upload_part_size or DEFAULT_PART_SIZE
    f = plan.forecast
    chosen = (f.storage_usd_per_gb_month, f.put_usd_per_1000, f.get_usd_per_1000)
    assumed = ASSUMED_PRICES.get(dest.kind, (0.0, 0.0, 0.0))
    prices = (
        chosen[0] if chosen[0] is not None else assumed[0],
        chosen[1] if chosen[1] is not None else assumed[1],
        chosen[2] if chosen[2] is not None else assumed[2],
    )
    fc = forecast(
        volumes,
        kind=dest.kind,
        bandwidth=link or 0,
        multipart_threshold=threshold,
        part_size=part_size,
        prices=prices,
        machine_limit=workers * cap if cap else None,
    )
    rate_s = cap_s = worker_s = 0.0
    for d in sizes:
        r = d.bytes / (workers * rates.of(d.kind)) if rates.of(d.kind) else 0.0
        c = d.stored_bytes / (workers * cap) if cap else 0.0
        rate_s, cap_s, worker_s = rate_s + r, cap_s + c, worker_s + max(r, c)
    return PlanEstimate(
        plan=plan.name,
        destination=dest.kind,
        datasets=tuple(sizes),
        workers=workers,
        rates=rates,
        forecast=fc,
        link=link,
        link_from_plan=link_from_plan,
        upload_cap=cap,
        rate_seconds=rate_s,
        cap_seconds=cap_s,
        worker_seconds=worker_s,
        link_seconds=fc.link_hours * 3600,
        prices_from_plan=(chosen[0] is not None, chosen[1] is not None, chosen[2] is not None),
        multipart=(threshold, part_size),
    )

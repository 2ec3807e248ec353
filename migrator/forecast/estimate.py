"""`migrator plan --estimate`: Dagster partitions, requests, time at N workers and cost of a
run of the whole plan, from each dataset's size (forecast/sizing.py) and a worker's rate
(forecast/worker.py), with the request and price arithmetic of forecast/model.py; and its
stages (listing, routing) and syncs at scale (forecast/stages.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from migrator.forecast.assumptions import plan_works
from migrator.forecast.model import (
    ASSUMED_PRICES,
    DatasetVolume,
    Forecast,
    forecast,
    puts_per_chunk,
)
from migrator.forecast.sizing import OBJECTS_RATIO, RECORDS_RATIO, DatasetEstimate
from migrator.forecast.stage_forecast import StageForecast, stage_forecast
from migrator.forecast.stages import Upload
from migrator.forecast.worker import WorkerRates
from migrator.plan.model import AzureDestinationPlan, DatasetKind, Plan, S3DestinationPlan
from migrator.sizes import format_size
from migrator.stores.base import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE


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
    stages: StageForecast  # listing, routing, and the syncs at `workers` workers

    def puts(self, d: DatasetEstimate) -> int:
        """One dataset's PUT-class requests, counted as forecast/model.py counts the plan's."""
        per_chunk = puts_per_chunk(d.stored_bytes / max(1, d.chunks), *self.multipart)
        return d.chunks * per_chunk + d.shards + 1

    @property
    def listing_seconds(self) -> float:
        """Listing the sources, once: before it, no worker has a task."""
        return self.stages.total("bulk").listing

    @property
    def seconds(self) -> float:
        """The listing, then the slower bound: more workers shorten theirs, only a wider link
        the other."""
        return self.listing_seconds + max(self.worker_seconds, self.link_seconds)

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
        stage_rows = self.stages.rows()
        rows.append(stage_rows[1])  # of which routing
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
        rows.append(stage_rows[0])  # listing
        rows.append((f"expected time at {n} workers", f"{span(self.seconds)}, bound by {bound}"))
        if self.workers_to_fill_link is not None:
            rows.append(("workers that keep the link full", f"{self.workers_to_fill_link:,}"))
        rows += stage_rows[2:]
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
                "routing_bytes_per_s": round(self.rates.routing_rate),
                "routing_measured": self.rates.routing is not None,
                "sync_seconds": self.rates.sync_seconds,
            },
            "datasets": [
                {
                    "dataset": d.dataset,
                    "kind": str(d.kind),
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
                "listing_seconds": self.listing_seconds,
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
            "stages": self.stages.as_dict(),
        }


def estimate_run(
    plan: Plan, sizes: list[DatasetEstimate], workers: int, rates: WorkerRates
) -> PlanEstimate:
    """Requests and costs from forecast/model.py's arithmetic; time from N workers at `rates`."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    dest = plan.destination
    cloud = dest if isinstance(dest, S3DestinationPlan | AzureDestinationPlan) else None
    # A local destination has no link unless the plan names one.
    link_from_plan = "bandwidth" in plan.forecast.model_fields_set
    link = plan.forecast.bandwidth if cloud is not None or link_from_plan else None
    cap = plan.bandwidth_limit
    volumes = [
        DatasetVolume(
            name=d.dataset,
            kind=d.kind,
            source_bytes=d.bytes,
            shards=d.shards,
            chunks=d.chunks,
            compression=RECORDS_RATIO if d.kind == DatasetKind.RECORDS else OBJECTS_RATIO,
            encode_rate=workers * rates.of(d.kind),
        )
        for d in sizes
    ]
    # What a store does when the plan leaves multipart unset (stores/s3.py, stores/azure.py).
    threshold, part_size = None, DEFAULT_PART_SIZE
    if cloud is not None:
        threshold = cloud.multipart_threshold or DEFAULT_MULTIPART_THRESHOLD
        part_size = cloud.upload_part_size or DEFAULT_PART_SIZE
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
    works, figures, costs = plan_works(sizes, rates)
    upload = Upload(cap, link)
    stages = stage_forecast(works, workers, f.sync_change, costs, upload, figures)
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
        stages=stages,
    )

"""What a real run will cost and how long it will take, from the plan and what the rehearsal
measured (compression, and the hot loop's rate on this machine).

Request counts follow from the plan's layout (shards, chunk and part sizes, multipart
settings), not from scaling the rehearsal: a small sample spread over thousands of shards makes
tiny chunks that a real run would not. Prices are assumed list prices for the sovereign regions
(USD); set `forecast:` in the plan to your agreement's. Pure arithmetic: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrator.forecast.stage_forecast import StageForecast, stage_forecast
from migrator.forecast.stages import (
    ASSUMED_FILE_BYTES,
    ASSUMED_RECORD_BYTES,
    DatasetWork,
    Figure,
    FixedCosts,
    Upload,
    assumed_files,
    cost_figures,
    listing_figure,
)
from migrator.plan.kinds import DatasetKind, StoreKind
from migrator.sizes import format_size

# (storage per GB-month, PUT-class per 1,000 requests, GET-class per 1,000): assumed list prices.
ASSUMED_PRICES = {
    StoreKind.S3: (0.039, 0.0055, 0.00044),  # S3 Standard, us-gov-west-1
    StoreKind.AZURE: (0.025, 0.0065, 0.0005),  # Blob Hot LRS, US Gov
    StoreKind.LOCAL: (0.0, 0.0, 0.0),
}
GB = 1_000_000_000


@dataclass(frozen=True, slots=True)
class DatasetVolume:
    """One dataset as the real run will see it."""

    name: str
    kind: DatasetKind
    source_bytes: int
    shards: int
    chunks: int  # stored chunks the real run will write
    compression: float  # source bytes / stored bytes, measured in the rehearsal
    encode_rate: float  # source bytes a second through the hot loop on this machine
    files: int | None = None  # None: not known, assumed from the size
    routing_rate: float = 0.0  # records bytes a second the rehearsal routed; 0: not measured
    record_bytes: float = 0.0  # a record's mean size in the rehearsal; 0: not counted
    source_kind: str = StoreKind.S3  # the real source's: how fast it lists


@dataclass(frozen=True, slots=True)
class Forecast:
    datasets: tuple[DatasetVolume, ...]
    source_bytes: int
    stored_bytes: int
    chunks: int
    put_requests: int
    verify_get_requests: int  # a full verify: every chunk, manifest and wrapped key read back
    bandwidth: int  # bytes a second of the link to the destination
    link_hours: float  # stored bytes over the link
    machine_hours: float  # one machine: its hot loop, or its upload cap if that is slower
    request_usd: float
    verify_usd: float
    storage_usd_month: float
    prices: tuple[float, float, float]
    stages: StageForecast | None = None  # listing, routing and syncs on one machine

    @property
    def hours(self) -> float:
        """The slower bound: more machines shorten one, only a wider link the other."""
        return max(self.link_hours, self.machine_hours)

    def machines_to_fill_link(self) -> int:
        return max(1, -(-int(self.machine_hours * 1000) // max(1, int(self.link_hours * 1000))))


def records_chunks(source_bytes: int, shards: int, chunk_size: int) -> int:
    """Every shard ends in a part-full chunk, so small shards cost a chunk each."""
    per_shard = -(-source_bytes // shards) if source_bytes else 0
    return shards * max(1, -(-per_shard // chunk_size))


def puts_per_chunk(stored_chunk: float, multipart_threshold: int | None, part_size: int) -> int:
    if multipart_threshold is None or stored_chunk <= multipart_threshold:
        return 1
    return 2 + -(-int(stored_chunk) // part_size)  # begin, the parts, complete


def forecast(
    datasets: list[DatasetVolume],
    *,
    kind: StoreKind,
    bandwidth: int,
    multipart_threshold: int | None,
    part_size: int,
    prices: tuple[float, float, float] | None = None,
    machine_limit: int | None = None,
    sync_change: float | None = None,
) -> Forecast:
    """`bandwidth` is the link's; `machine_limit` a machine's upload cap (bandwidth_limit);
    with `sync_change`, also the stages and syncs on one machine (machine_stages)."""
    storage_price, put_price, get_price = prices or ASSUMED_PRICES.get(kind, (0.0, 0.0, 0.0))
    stored = chunks = puts = gets = 0
    machine_s = 0.0
    for d in datasets:
        d_stored = int(d.source_bytes / d.compression) if d.compression else d.source_bytes
        stored += d_stored
        chunks += d.chunks
        per_chunk = puts_per_chunk(d_stored / max(1, d.chunks), multipart_threshold, part_size)
        puts += d.chunks * per_chunk + d.shards + 1  # chunks, manifests, the wrapped key
        gets += d.chunks + d.shards + 1
        hot_loop_s = d.source_bytes / d.encode_rate if d.encode_rate else 0.0
        hot_loop_s += d.source_bytes / d.routing_rate if d.routing_rate else 0.0
        capped_s = d_stored / machine_limit if machine_limit else 0.0
        machine_s += max(hot_loop_s, capped_s)
    return Forecast(
        datasets=tuple(datasets),
        source_bytes=sum(d.source_bytes for d in datasets),
        stored_bytes=stored,
        chunks=chunks,
        put_requests=puts,
        verify_get_requests=gets,
        bandwidth=bandwidth,
        link_hours=stored / bandwidth / 3600 if bandwidth else 0.0,
        machine_hours=machine_s / 3600,
        request_usd=puts / 1000 * put_price,
        verify_usd=gets / 1000 * get_price,
        storage_usd_month=stored / GB * storage_price,
        prices=(storage_price, put_price, get_price),
        stages=None
        if sync_change is None
        else machine_stages(datasets, sync_change, Upload(machine_limit, bandwidth or None)),
    )


def machine_stages(datasets: list[DatasetVolume], change: float, upload: Upload) -> StageForecast:
    """The dry run's stages on one machine: routing as the rehearsal measured it, encoding at
    the hot loop's rate, the rest assumed."""
    works, figures = [], []
    unsized_records = False
    for d in datasets:
        records = d.kind is DatasetKind.RECORDS
        files = d.files if d.files is not None else assumed_files(d.source_bytes)
        listing = listing_figure(f"listing {d.name}, one thread", d.source_kind)
        works.append(
            DatasetWork(
                name=d.name,
                kind=d.kind,
                source_bytes=d.source_bytes,
                stored_bytes=int(d.source_bytes / d.compression) if d.compression else 0,
                files=files,
                shards=d.shards,
                routing_rate=d.routing_rate if records else 0.0,
                encoding_rate=d.encode_rate,
                listing_rate=listing.value,
                record_bytes=d.record_bytes or ASSUMED_RECORD_BYTES,
            )
        )
        if records and d.routing_rate:
            figures.append(
                Figure(f"routing {d.name}", d.routing_rate, "B/s", "measured", "the rehearsal")
            )
        if records and d.record_bytes:
            figures.append(
                Figure(f"a record of {d.name}", d.record_bytes, "B", "measured", "the rehearsal")
            )
        unsized_records |= records and not d.record_bytes
        figures.append(
            Figure(
                f"hot loop on {d.name}", d.encode_rate, "B/s", "measured", "every core, its data"
            )
        )
        if d.files is None:
            basis = f"a file per {format_size(ASSUMED_FILE_BYTES)}; set expected_files"
            figures.append(Figure(f"files of {d.name}", files, "files", "assumed", basis))
        figures.append(listing)
    costs = FixedCosts()
    figures += cost_figures(costs, sync_measured=False, records=unsized_records)
    return stage_forecast(works, 1, change, costs, upload, figures, who="machine")

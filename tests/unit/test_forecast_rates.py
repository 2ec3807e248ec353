"""Which rates the forecast uses and whether each was measured, given or assumed: a worker's
routing rate timed by the phases of a run, the records rate split into routing and encoding,
listings timed when sizing lists them, and the dry run's stages on one machine."""

from __future__ import annotations

import pytest

import migrator.forecast.phases as phases
from migrator.forecast.assumptions import TIMED_LISTING_FILES, plan_works
from migrator.forecast.model import DatasetVolume, forecast
from migrator.forecast.phases import PhaseClock
from migrator.forecast.sizing import DatasetEstimate
from migrator.forecast.stages import (
    ASSUMED_FILE_BYTES,
    CLOUD_LISTING_RATE,
    LOCAL_LISTING_RATE,
    SYNC_FIXED_SECONDS,
)
from migrator.forecast.worker import ROUTING_SHARE, WorkerRates, given_rates
from migrator.plan.kinds import DatasetKind, StoreKind
from migrator.write.reports import ProgressSink

GB = 10**9


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting(ProgressSink):
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        self.seen.append(("start", phase))

    def advance(self, nbytes: int) -> None:
        self.seen.append(("advance", nbytes))


def test_the_phase_clock_times_routing_and_passes_reports_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks = Ticks()
    monkeypatch.setattr(phases.time, "monotonic", ticks)
    inner = Counting()
    clock = PhaseClock(inner)
    clock.start("profiles", "routing", 200_000_000)
    clock.advance(5)
    ticks.now += 2.0
    clock.start("profiles", "encoding", 200_000_000)
    assert clock.rate("profiles", "routing") == pytest.approx(100e6)
    assert clock.rate("profiles", "encoding") is None  # not over yet
    ticks.now += 4.0
    clock.stop()
    assert clock.rate("profiles", "encoding") == pytest.approx(50e6)
    assert clock.rate("videos", "routing") is None
    assert inner.seen == [("start", "routing"), ("advance", 5), ("start", "encoding")]


def test_routing_and_encoding_add_up_to_the_records_rate() -> None:
    measured = WorkerRates(100e6, 300e6, 5.0, 2, routing=150e6, sync_seconds=0.3)
    assert measured.routing_rate == 150e6
    assert 1 / measured.routing_rate + 1 / measured.records_encoding == pytest.approx(1 / 100e6)
    given = given_rates(70_000_000)
    assert given.routing_rate == pytest.approx(70e6 / ROUTING_SHARE)
    assert 1 / given.routing_rate + 1 / given.records_encoding == pytest.approx(1 / 70e6)
    # A routing rate timed below the end-to-end one (a noisy clock) never makes encoding free.
    odd = WorkerRates(100e6, 300e6, 5.0, 2, routing=90e6)
    assert odd.records_encoding == 100e6


def estimate(**kw: object) -> DatasetEstimate:
    base: dict[str, object] = {
        "dataset": "profiles",
        "kind": DatasetKind.RECORDS,
        "shards": 64,
        "files": None,
        "bytes": 10 * GB,
        "chunks": 64,
        "stored_bytes": 10 * GB // 4,
        "source_kind": "s3",
    }
    base.update(kw)
    return DatasetEstimate(**base)  # type: ignore[arg-type]


def test_each_figure_says_whether_it_was_measured_given_or_assumed() -> None:
    sizes = [
        estimate(),
        estimate(dataset="meta", expected_files=123),
        estimate(
            dataset="local",
            files=TIMED_LISTING_FILES * 2,
            listed_seconds=0.5,
            source_kind=StoreKind.LOCAL,
        ),
        estimate(dataset="few", files=3, listed_seconds=1e-5, source_kind=StoreKind.LOCAL),
        estimate(dataset="videos", kind=DatasetKind.OBJECTS),
    ]
    works, figures, costs = plan_works(sizes, given_rates(50_000_000))
    how = {f.name: (f.value, f.how) for f in figures}
    assert how["records, end to end, one worker"] == (50e6, "given")
    assert how["routing records, one worker"] == (pytest.approx(50e6 / ROUTING_SHARE), "assumed")
    assert how["files of profiles"] == (-(-10 * GB // ASSUMED_FILE_BYTES), "assumed")
    assert how["files of meta"] == (123, "given")
    assert how["listing profiles, one thread"] == (CLOUD_LISTING_RATE, "assumed")
    assert how["listing local, one thread"] == (TIMED_LISTING_FILES * 4, "measured")
    assert how["listing few, one thread"] == (LOCAL_LISTING_RATE, "assumed")  # too few to time
    assert how["a sync's fixed cost, a dataset"] == (SYNC_FIXED_SECONDS, "assumed")
    assert "files of local" not in how  # listed: counted, not assumed
    by_name = {w.name: w for w in works}
    assert by_name["videos"].routing_rate == 0 and by_name["videos"].encoding_rate == 50e6
    assert by_name["meta"].files == 123
    assert costs.sync_seconds == SYNC_FIXED_SECONDS

    measured = WorkerRates(100e6, 300e6, 5.0, 2, 0.0, 96, routing=150e6, sync_seconds=0.4)
    _, figures, costs = plan_works(sizes[:1], measured)
    how = {f.name: (f.value, f.how) for f in figures}
    assert how["routing records, one worker"] == (150e6, "measured")
    assert how["a sync's fixed cost, a dataset"] == (0.4, "measured")
    assert costs.sync_seconds == 0.4


def test_the_dry_runs_forecast_adds_routing_and_the_syncs_on_one_machine() -> None:
    volume = DatasetVolume(
        "profiles",
        DatasetKind.RECORDS,
        10 * GB,
        16,
        160,
        4.0,
        500e6,
        files=40,
        routing_rate=125e6,
        record_bytes=600.0,
    )
    kwargs = {
        "kind": StoreKind.S3,
        "bandwidth": 125_000_000,
        "multipart_threshold": None,
        "part_size": 16 * 2**20,
    }
    plain = forecast([volume], **kwargs)  # type: ignore[arg-type]
    assert plain.stages is None
    f = forecast([volume], sync_change=0.02, **kwargs)  # type: ignore[arg-type]
    assert f.stages is not None and f.stages.who == "machine" and f.stages.workers == 1
    # One machine routes, then encodes: both count.
    assert f.machine_hours == pytest.approx((10 * GB / 125e6 + 10 * GB / 500e6) / 3600)
    s = f.stages.total("sync")
    assert s.changed_bytes == 0.02 * 10 * GB
    assert s.routing == pytest.approx(0.02 * 10 * GB / 125e6)
    rows = dict(f.stages.rows())
    assert "a sync at 2 % change on one machine" in rows
    how = {x.name: x.how for x in f.stages.figures}
    assert how["routing profiles"] == "measured"
    assert how["a record of profiles"] == "measured"
    assert how["listing profiles, one thread"] == "assumed"
    assert "a record's mean size" not in how  # the rehearsal counted them

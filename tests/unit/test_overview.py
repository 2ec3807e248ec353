"""The migration overview's figures (migrator.read.overview) from a state store a real small run
made: moved against expected, throughput over the recent window, ETA, and the text they read as."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import migrator
from migrator.plan.model import Plan
from migrator.read.overview import (
    PlanOverview,
    Rate,
    amount,
    eta_text,
    overview_json,
    plan_overview,
    rate_text,
    totals_line,
)
from migrator.read.status import plan_status
from migrator.sharding import shard_of
from migrator.sizes import format_size
from migrator.state.db import StateDB
from migrator.wiring import open_existing_state
from tests.pipelines import PROFILES, VIDEO_SIZES, write_demo_shaped_plan
from tests.planfiles import write_objects, write_plan

GiB = 1024**3


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return migrator.load_plan(write_demo_shaped_plan(tmp_path))


def overview(plan: Plan, now: float | None = None) -> PlanOverview:
    state = open_existing_state(plan)
    assert state is not None
    with state:
        return plan_overview(plan, state, now=now)


def run_some(plan: Plan, dataset: str, shards: list[int]) -> None:
    with migrator.connect(plan) as conn:
        migrator.run(conn, {dataset}, shards)


def source_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_before_any_run_nothing_moved_and_nothing_is_known(plan: Plan) -> None:
    o = plan_overview(plan, None)
    assert [d.state for d in o.datasets] == ["not started", "not started"]
    assert o.bytes_moved == 0 and o.bytes_expected is None and o.eta_seconds is None
    assert "of ?" in totals_line(o) and "ETA unknown" in totals_line(o)


def test_a_partial_bulk_shows_moved_of_expected_a_throughput_and_an_eta(
    plan: Plan, tmp_path: Path
) -> None:
    run_some(plan, "user_profiles", [0, 1])
    run_some(plan, "videos", [0])
    o = overview(plan)
    profiles, videos = o.datasets

    with StateDB.sqlite_file(plan.state_dir / "state.sqlite") as state:
        status = {d.name: d for d in plan_status(plan, state).datasets}
    kept = status["user_profiles"].progress
    assert profiles.bytes_moved == sum(p.plain_bytes for p in kept) > 0
    assert profiles.items_moved == sum(p.records for p in kept) < PROFILES
    assert (profiles.shards_complete, profiles.state) == (2, "bulk in progress")
    # Records: the routing's file table says what the bulk reads, in bytes, before encoding.
    assert profiles.expected.bytes == source_bytes(tmp_path / "data" / "user_profiles")
    assert "routing's file table (3 files)" in profiles.expected.basis
    assert profiles.expected.items == pytest.approx(PROFILES, rel=0.02)

    # Objects: nothing lists the source; the one complete shard of three is extrapolated.
    in_shard_0 = [i for i, _ in enumerate(VIDEO_SIZES) if _video_shard(i) == 0]
    assert videos.items_moved == len(in_shard_0)
    assert videos.bytes_moved == sum(VIDEO_SIZES[i] for i in in_shard_0)
    assert videos.expected.bytes == 3 * videos.bytes_moved
    assert "extrapolated from 1 of 3 shards" in videos.expected.basis

    # All of it was committed within the window: a throughput, and an ETA from it.
    assert o.rate.bytes == o.bytes_moved and o.rate.per_second > 0
    expected = o.bytes_expected
    assert expected is not None and expected > o.bytes_moved
    assert o.eta_seconds == pytest.approx((expected - o.bytes_moved) / o.rate.per_second)
    line = totals_line(o)
    assert f"{format_size(o.bytes_moved)} of {format_size(expected)}" in line
    assert "/s over the last 5 min" in line
    assert overview_json(o)["datasets"][1]["objects"] == len(in_shard_0)

    # An hour on with nothing committed: no throughput, so no ETA; what moved stays.
    later = overview(plan, now=time.time() + 3600)
    assert later.bytes_moved == o.bytes_moved and later.rate.per_second == 0
    assert later.eta_seconds is None and eta_text(later.eta_seconds) == "unknown"


def _video_shard(i: int) -> int:
    """The shard of the i-th video tests.planfiles.write_objects writes."""
    name = f"{i % 3:02x}/video {i}é.mp4" if i % 4 == 0 else f"{i % 3:02x}/v{i}.mp4"
    return shard_of(name.encode(), 3)


def test_a_finished_bulk_is_its_own_total_and_done(plan: Plan) -> None:
    run_some(plan, "user_profiles", list(range(4)))
    run_some(plan, "videos", list(range(3)))
    o = overview(plan)
    profiles, videos = o.datasets
    assert [d.state for d in o.datasets] == ["bulk committed", "bulk committed"]
    assert (profiles.items_moved, profiles.expected.items) == (PROFILES, PROFILES)
    assert (videos.items_moved, videos.expected.items) == (len(VIDEO_SIZES), len(VIDEO_SIZES))
    assert videos.bytes_moved == videos.expected.bytes == sum(VIDEO_SIZES)
    assert o.bytes_expected == o.bytes_moved and o.eta_seconds == 0
    assert eta_text(o.eta_seconds) == "done" and "(100.0 %)" in totals_line(o)


def test_a_declared_expected_size_is_the_total_until_the_shards_say_more(
    tmp_path: Path,
) -> None:
    write_objects(tmp_path / "data" / "videos", VIDEO_SIZES)
    declared = write_plan(
        tmp_path,
        datasets="  - {name: videos, kind: objects, source: {kind: local, path: data/videos},"
        " shards: 3, part_size: 64KiB, expected_size: 2MiB, expected_files: 40}\n",
    )
    plan = migrator.load_plan(declared)
    (videos,) = plan_overview(plan, None).datasets
    assert (videos.expected.bytes, videos.expected.items) == (2 * 1024 * 1024, 40)
    assert videos.expected.basis == "the plan's expected_size"
    run_some(plan, "videos", [0])
    (videos,) = overview(plan).datasets
    assert videos.expected.bytes == 2 * 1024 * 1024 and videos.bytes_moved > 0


@pytest.mark.parametrize(
    ("moved", "expected", "unit", "text"),
    [
        (int(1.2 * GiB), 4 * GiB, "bytes", "1.2 GiB of 4.0 GiB (30.0 %)"),
        (1200, 4000, "records", "1,200 of 4,000 records (30.0 %)"),
        (512, None, "bytes", "512 B of ?"),
    ],
)
def test_amounts_read_in_byte_units(moved: int, expected: int | None, unit: str, text: str) -> None:
    assert amount(moved, expected, unit) == text


def test_rates_and_etas_read_as_people_say_them() -> None:
    assert rate_text(Rate(35 * 1024 * 1024 * 60, 60.0)) == "35.0 MiB/s"
    assert rate_text(Rate(0, 0.0)) == "0 B/s"
    assert eta_text(5400.0) == "1.5 h" and eta_text(None) == "unknown"


def test_reading_never_makes_a_store(plan: Plan) -> None:
    assert open_existing_state(plan) is None
    plan_overview(plan, None)
    assert open_existing_state(plan) is None

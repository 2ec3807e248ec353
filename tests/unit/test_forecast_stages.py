"""The stages at scale: listing once, routing and encoding spread over W workers, and a sync that
costs what changed (listing, the changed files routed, the touched shards' inventories, the
changed bytes encoded and sent, a fixed cost per changed shard and per sync)."""

from __future__ import annotations

import math

import pytest

from migrator.forecast.stage_forecast import decimal_size, duration, share, stage_forecast
from migrator.forecast.stages import (
    CLOUD_LISTING_RATE,
    OBJECT_ENTRY_BYTES,
    DatasetWork,
    FixedCosts,
    StageTimes,
    Upload,
    bulk,
    changed_shards,
    freeze,
    listing_figure,
    sync,
)
from migrator.plan.kinds import DatasetKind, StoreKind

GB = 10**9
COSTS = FixedCosts(
    listing_threads=8, inventory_rate=50e6, changed_shard_seconds=0.1, sync_seconds=2.0
)


def records(shards: int = 4096, source: int = 180 * GB, files: int = 2000) -> DatasetWork:
    return DatasetWork(
        name="profiles",
        kind=DatasetKind.RECORDS,
        source_bytes=source,
        stored_bytes=source // 4,
        files=files,
        shards=shards,
        routing_rate=100e6,
        encoding_rate=300e6,
        listing_rate=5000.0,
        record_bytes=1000.0,
    )


def objects(files: int = 1_000_000) -> DatasetWork:
    return DatasetWork(
        name="videos",
        kind=DatasetKind.OBJECTS,
        source_bytes=1000 * GB,
        stored_bytes=1000 * GB,
        files=files,
        shards=64,
        routing_rate=0.0,
        encoding_rate=500e6,
        listing_rate=5000.0,
    )


def test_changed_shards_follow_the_change_until_every_shard_is_touched() -> None:
    assert changed_shards(0, 4096) == 0
    assert changed_shards(1, 4096) == 1
    assert changed_shards(5, 1) == 1
    # n changes over n shards touch 1 - 1/e of them, expected.
    assert changed_shards(4096, 4096) == pytest.approx(4096 * (1 - math.exp(-1)), abs=2)
    assert changed_shards(10**7, 4096) == 4096
    assert changed_shards(10, 4096) == 10


def test_the_bulk_lists_once_and_spreads_routing_and_encoding_over_workers() -> None:
    d = records()
    one, ten = bulk(d, 1, COSTS, Upload()), bulk(d, 10, COSTS, Upload())
    assert one.listing == ten.listing == pytest.approx(2000 / (8 * 5000))
    assert one.routing == pytest.approx(180 * GB / 100e6)
    assert one.encoding == pytest.approx(180 * GB / 300e6)
    assert ten.routing == pytest.approx(one.routing / 10)
    assert ten.encoding == pytest.approx(one.encoding / 10)
    assert one.seconds == pytest.approx(one.listing + one.routing + one.encoding)


def test_the_link_or_an_upload_cap_bounds_encoding() -> None:
    d = objects()
    linked = bulk(d, 100, COSTS, Upload(link=1 * GB))
    assert linked.encoding == pytest.approx(1000 * GB / GB)  # not 1000 GB / (100 x 500 MB/s)
    capped = bulk(d, 2, COSTS, Upload(cap=100_000_000))
    assert capped.encoding == pytest.approx(1000 * GB / (2 * 100e6))


def test_a_records_sync_costs_the_change() -> None:
    d = records()
    s = sync(d, 4, 0.01, COSTS, Upload())
    changed = 0.01 * 180 * GB
    assert s.changed_bytes == changed
    assert s.listing == pytest.approx(2000 / (8 * 5000))  # the whole source, listed again
    assert s.routing == pytest.approx(changed / (4 * 100e6))  # only the changed files
    assert s.encoding == pytest.approx(changed / (4 * 300e6))
    # 1.8 M changed records touch every one of 4,096 shards: each rewrites its inventory.
    assert s.changed_shards == 4096
    inventory = 180 * GB / 1000 * 40  # 40 bytes a record
    assert s.inventories == pytest.approx(inventory / (4 * 50e6))
    assert s.shards == pytest.approx(4096 * 0.1 / 4)
    assert s.fixed == 2.0
    assert s.seconds == pytest.approx(
        s.listing + s.routing + s.inventories + s.encoding + s.shards + s.fixed
    )


def test_a_sync_with_no_change_costs_its_listing_and_fixed_cost_only() -> None:
    s = sync(records(), 4, 0.0, COSTS, Upload(link=GB))
    assert s == StageTimes(listing=2000 / (8 * 5000), fixed=2.0)
    # Objects read every shard's inventory to diff the listing, change or not.
    o = sync(objects(), 4, 0.0, COSTS, Upload())
    assert o.changed_shards == 0 and o.encoding == 0
    assert o.inventories == pytest.approx(1_000_000 * OBJECT_ENTRY_BYTES / (4 * 50e6))


def test_sync_cost_grows_with_the_change_and_with_the_shards_it_touches() -> None:
    small = sync(records(shards=64, source=GB), 1, 0.0001, COSTS, Upload())
    large = sync(records(shards=64, source=GB), 1, 0.01, COSTS, Upload())
    assert small.changed_shards < large.changed_shards == 64
    assert small.seconds < large.seconds
    few = sync(records(shards=64), 1, 0.01, COSTS, Upload())
    many = sync(records(shards=4096), 1, 0.01, COSTS, Upload())
    assert many.shards == pytest.approx(few.shards * 64)  # a fixed cost per changed shard
    # The inventories hold every record once, however they are sharded.
    assert many.inventories == pytest.approx(few.inventories)


def test_an_objects_sync_sends_the_changed_objects() -> None:
    s = sync(objects(), 2, 0.01, COSTS, Upload())
    assert s.routing == 0
    assert s.changed_bytes == 10 * GB
    assert s.encoding == pytest.approx(10 * GB / (2 * 500e6))
    assert s.changed_shards == changed_shards(10_000, 64) == 64


def test_more_workers_shorten_all_but_the_listing_and_the_fixed_cost() -> None:
    d = records()
    one, eight = sync(d, 1, 0.01, COSTS, Upload()), sync(d, 8, 0.01, COSTS, Upload())
    assert (eight.listing, eight.fixed) == (one.listing, one.fixed)
    for part in ("routing", "inventories", "encoding", "shards"):
        assert getattr(eight, part) == pytest.approx(getattr(one, part) / 8)


def test_the_freeze_is_the_final_sync_then_the_gates_listing() -> None:
    d = records()
    s, f = sync(d, 4, 0.01, COSTS, Upload()), freeze(d, 4, 0.01, COSTS, Upload())
    assert f.gate == pytest.approx(s.listing)
    assert f.seconds == pytest.approx(s.seconds + s.listing)


def test_the_plan_sums_its_datasets_and_says_what_each_figure_rests_on() -> None:
    works = [records(), objects()]
    figure = listing_figure("listing videos, one thread", StoreKind.S3)
    assert (figure.value, figure.how) == (CLOUD_LISTING_RATE, "assumed")
    assert "1,000 keys a list request, 0.2 s a request" in figure.basis
    f = stage_forecast(works, 10, 0.01, COSTS, Upload(), [figure])
    syncs = [sync(w, 10, 0.01, COSTS, Upload()) for w in works]
    assert f.total("sync").seconds == pytest.approx(sum(s.seconds for s in syncs))
    assert f.files == 1_002_000
    rows = dict(f.rows())
    assert rows["a sync at 1 % change at 10 workers"] == f"~{duration(f.total('sync').seconds)}"
    assert rows["listing the source, once a generation (8 threads)"].endswith(", 1,002,000 names")
    assert rows["final sync inside the freeze"] == f"~{duration(f.total('freeze').seconds)}"
    parts = f.part_rows()
    assert [p[0] for p in parts] == ["profiles", "videos", "all datasets"]
    assert f.figure_rows() == [(figure.name, "5,000 names/s", "assumed", figure.basis)]
    doc = f.as_dict()
    assert doc["sync_seconds"] == pytest.approx(f.total("sync").seconds)
    assert doc["freeze_seconds"] > doc["sync_seconds"] > doc["no_change_sync_seconds"] > 0
    assert doc["routing_hours"] == pytest.approx(180 * GB / (10 * 100e6) / 3600)
    assert doc["figures"][0]["how"] == "assumed"
    with pytest.raises(ValueError, match="share from 0 to 1"):
        stage_forecast(works, 10, 1.5, COSTS, Upload(), [])
    with pytest.raises(ValueError, match="workers"):
        stage_forecast(works, 0, 0.01, COSTS, Upload(), [])


def test_durations_and_sizes_read_as_people_read_them() -> None:
    assert duration(0.3) == "0.3 s"
    assert duration(42) == "42 s"
    assert duration(600) == "10 min"
    assert duration(5 * 3600) == "5.0 h"
    assert duration(72 * 3600) == "72 h (3.0 days)"
    assert decimal_size(999) == "999 B"
    assert decimal_size(1.8e9) == "1.8 GB"
    assert decimal_size(1e13) == "10.0 TB"
    assert share(0.01) == "1 %" and share(0.005) == "0.5 %"

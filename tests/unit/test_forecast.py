"""The forecast follows the plan's layout: shards, chunk sizes, multipart, prices."""

from __future__ import annotations

import pytest

from migrator.forecast.model import DatasetVolume, forecast, puts_per_chunk, records_chunks

GiB = 1024**3
MiB = 1024**2


def test_records_chunks_count_a_partial_chunk_per_shard() -> None:
    assert records_chunks(0, 4096, 64 * MiB) == 4096
    assert records_chunks(64 * MiB * 4096, 4096, 64 * MiB) == 4096
    assert records_chunks(64 * MiB * 4096 + 1, 4096, 64 * MiB) == 8192


def test_multipart_puts() -> None:
    assert puts_per_chunk(10 * MiB, 32 * MiB, 16 * MiB) == 1
    assert puts_per_chunk(64 * MiB, 32 * MiB, 16 * MiB) == 2 + 4
    assert puts_per_chunk(64 * MiB, None, 16 * MiB) == 1


def test_forecast_adds_up() -> None:
    d = DatasetVolume("v", "objects", 1000 * GiB, 10, 16000, 1.0, 500e6)
    f = forecast(
        [d],
        kind="s3",
        bandwidth=100_000_000,
        multipart_threshold=None,
        part_size=16 * MiB,
        prices=(0.05, 0.01, 0.001),
    )
    assert f.stored_bytes == 1000 * GiB
    assert f.put_requests == 16000 + 10 + 1
    assert f.link_hours == pytest.approx(1000 * GiB / 100e6 / 3600)
    assert f.machine_hours == pytest.approx(1000 * GiB / 500e6 / 3600)
    assert f.hours == f.link_hours
    assert f.request_usd == pytest.approx(f.put_requests / 1000 * 0.01)
    assert f.storage_usd_month == pytest.approx(1000 * GiB / 1e9 * 0.05)
    assert f.machines_to_fill_link() == 1

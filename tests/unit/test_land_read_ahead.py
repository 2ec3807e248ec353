"""Landing reads chunks ahead only as far as the plan's memory budget allows: with several
objects landing at once, each part read ahead is held in memory until it is sent."""

from __future__ import annotations

from migrator.landing.changes import READ_AHEAD, read_ahead
from migrator.sizes import GiB, MiB


def test_large_parts_are_read_one_at_a_time_within_the_budget() -> None:
    assert read_ahead(512 * MiB, 64 * MiB) == 1  # 642 MiB peaks came of reading four ahead
    assert read_ahead(2 * GiB, 64 * MiB) == 4
    assert read_ahead(512 * MiB, 16 * MiB) == 4
    assert read_ahead(64 * MiB, 64 * MiB) == 1  # never none: one chunk always moves


def test_small_chunks_read_no_further_ahead_than_the_cap() -> None:
    assert read_ahead(16 * GiB, 64 * 1024) == READ_AHEAD

"""LocalSource.read_range_into: the same bytes and the same refusals as read_range, into a
buffer the caller reuses; an objects run reads local parts through it, below the source's
views."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from migrator.errors import SourceChangedError, SourceError
from migrator.sources.base import FilteredSource, RestorableNames
from migrator.sources.local import LocalSource
from migrator.write.objects_delta import _reader_into


@pytest.fixture
def source(tmp_path: Path) -> LocalSource:
    (tmp_path / "clip.mp4").write_bytes(bytes(range(256)) * 1000)
    return LocalSource(tmp_path)


def test_read_into_gives_the_range_read_range_gives(source: LocalSource) -> None:
    (obj,) = source.list()
    buffer = mmap.mmap(-1, 300_000)
    for offset, length in ((0, 256_000), (1, 255), (255_999, 1), (1000, 0)):
        view = source.read_range_into(obj, offset, length, buffer)
        assert view.obj is buffer
        assert bytes(view) == source.read_range(obj, offset, length)


def test_a_buffer_too_small_is_refused(source: LocalSource) -> None:
    (obj,) = source.list()
    with pytest.raises(ValueError, match="cannot hold"):
        source.read_range_into(obj, 0, 1000, bytearray(999))


def test_a_file_changed_or_shrunk_since_the_listing_is_refused(
    source: LocalSource, tmp_path: Path
) -> None:
    (obj,) = source.list()
    path = tmp_path / "clip.mp4"
    os.utime(path, ns=(0, 12345))
    with pytest.raises(SourceChangedError):
        source.read_range_into(obj, 0, 10, bytearray(10))
    with path.open("r+b") as fh:
        fh.truncate(100)
    (shrunk,) = source.list()
    with pytest.raises(SourceError, match="shrank"):
        source.read_range_into(shrunk, 0, 200, bytearray(200))


def test_an_objects_run_reads_into_buffers_below_the_views(source: LocalSource) -> None:
    viewed = RestorableNames(FilteredSource(source, ["*.mp4"]), "videos")
    read_into = _reader_into(viewed)
    assert read_into is not None and read_into.__self__ is source  # type: ignore[attr-defined]


def test_a_source_without_read_into_is_read_as_before(source: LocalSource) -> None:
    class Plain:
        def __init__(self, inner: LocalSource) -> None:
            self.inner = inner

        def read_range(self, obj: object, offset: int, length: int) -> bytes:
            raise AssertionError("not called here")

    assert _reader_into(Plain(source)) is None  # type: ignore[arg-type]

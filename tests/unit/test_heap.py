"""The run's C heap keeps chunk-sized buffers mapped (migrator/heap.py)."""

from __future__ import annotations

import sys

import pytest

from migrator.heap import map_large_buffers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_threshold_is_fixed_on_glibc() -> None:
    libc_is_glibc = sys.platform.startswith("linux") and "glibc" in " ".join(
        __import__("platform").libc_ver()
    )
    assert map_large_buffers() is libc_is_glibc

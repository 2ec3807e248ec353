"""The run's C heap keeps chunk-sized buffers mapped (migrator/heap.py): where the C library is
glibc the threshold is fixed; anywhere else nothing is touched and the call says so."""

from __future__ import annotations

import platform
import sys

import pytest

from migrator import heap


def test_the_threshold_is_fixed_where_the_c_library_is_glibc() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert heap.map_large_buffers() is glibc


def test_another_platform_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert heap.map_large_buffers() is False

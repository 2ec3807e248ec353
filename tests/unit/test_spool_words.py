"""A digest spool's totals read a word column at a time equal the entry-by-entry fold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from migrator.codec.digests import DIGEST_ENTRY, MOD, entry_lengths, spool_digest

ENTRY = st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))


@given(st.lists(st.tuples(ENTRY, st.integers(0, 2**64 - 1)), max_size=50), st.integers(0, 7))
def test_columns_fold_as_entries_do(
    entries: list[tuple[tuple[bytes, bytes], int]], skew: int
) -> None:
    spool = b"".join(DIGEST_ENTRY.pack(kh, dg, n) for (kh, dg), n in entries)
    view = memoryview(b"x" * skew + spool)[skew:]  # wherever the spool starts in memory
    total = sum(int.from_bytes(dg) for (_kh, dg), _n in entries) % MOD
    assert spool_digest(view) == (total, len(entries))
    assert list(entry_lengths(view)) == [n for _, n in entries]

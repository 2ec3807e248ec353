"""Quote parity reads a CSV buffer as the field-aware patterns do wherever it answers: the last
record end and the record count of every prefix, source and stored framing, on generated rows
(quoted fields with delimiters, doubled quotes and line ends inside, stray quotes, CRs)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.records.framing import RecordFraming

CELL = st.text(alphabet=st.sampled_from(list('ab",;\n\r x')), max_size=6)


@st.composite
def buffers(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(st.lists(CELL, min_size=1, max_size=4), min_size=1, max_size=8))
    out = []
    for row in rows:
        cells = []
        for cell in row:
            how = draw(st.sampled_from(["quoted", "plain", "raw"]))
            if how == "quoted":
                cells.append('"' + cell.replace('"', '""') + '"')
            elif how == "plain":
                cells.append(cell.replace('"', "").replace("\n", "").replace("\r", ""))
            else:
                cells.append(cell)
        out.append(",".join(cells))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return (end.join(out) + draw(st.sampled_from([end, ""]))).encode()


def _pair(cr_ends: bool) -> tuple[RecordFraming, RecordFraming]:
    fast, patterns = RecordFraming(",", cr_ends=cr_ends), RecordFraming(",", cr_ends=cr_ends)
    patterns.parity = False
    return fast, patterns


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buffers(), st.integers(0, 10_000), st.booleans())
def test_parity_finds_the_record_ends_the_patterns_find(data: bytes, cut: int, final: bool) -> None:
    for cr_ends in (True, False):
        fast, patterns = _pair(cr_ends)
        limit = cut % (len(data) + 1)
        assert fast.last_end(data, final, limit) == patterns.last_end(data, final, limit)
        assert fast.last_end(data, final) == patterns.last_end(data, final)
        whole = patterns.last_end(data, True)
        assert fast.count(data, whole) == patterns.count(data, whole)


def test_doubled_quotes_and_line_ends_inside_quoted_fields() -> None:
    data = b'1,"a ""b"", c\nd",x\r\n2,"",y\n3,"e\r\nf",z\n4,"open\n'
    for cr_ends in (True, False):
        fast, patterns = _pair(cr_ends)
        for end in range(len(data) + 1):
            assert fast.last_end(data, False, end) == patterns.last_end(data, False, end)
        assert fast.count(data, 39) == patterns.count(data, 39)

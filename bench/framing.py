"""Framing benchmark: records framed a second at 25, 50 and 100 MiB of CSV and JSONL.

    python bench/framing.py [--sizes 25,50,100] [--read-size 8MiB]

Each CSV holds ordinary rows, rows with quoted delimiters, doubled quotes and line feeds, rows
with a stray `"` inside an unquoted field (`27" monitor`), and one 1 MiB quoted field of line
feeds. Framing is linear when MB/s stays flat as the size grows (time 100/25 near 4). The last
line times a 100 MiB CSV with a quote that opens and never closes: refused (UnclosedQuoteError)
once max_record_size (64 MiB) of it is read. MB means 10^6 bytes.
"""

from __future__ import annotations

import argparse
import io
import time

from migrator.errors import UnclosedQuoteError
from migrator.records.blocks import DEFAULT_MAX_RECORD, RecordBlocks
from migrator.records.framing import framing_of
from migrator.sizes import MiB, parse_size


def csv_data(size: int) -> bytes:
    rows = [
        b"%d,plain title,300",
        b'%d,"say ""hi"", to all",12',
        b'%d,"two\nlines",7',
        b'%d,27" monitor,1',
    ]
    body = b"".join(rows[i % 4] % i + b"\n" for i in range(size // 20))
    big = b'0,"' + b"line\n" * (MiB // 5) + b'",1\n'
    return (b"id,title,n\n" + big + body)[:size].rsplit(b"\n", 1)[0] + b"\n"


def jsonl_data(size: int) -> bytes:
    line = b'{"user_id": "u%09d", "name": "Zo\\u00eb", "bio": "video music travel cats"}\r\n'
    return b"".join(line % i for i in range(size // (len(line) + 3)))


def frame(data: bytes, delimiter: str | None, read_size: int) -> tuple[int, float]:
    """(records, seconds): blocks read at `read_size`, each split into records."""
    framing = framing_of(delimiter)
    started = time.perf_counter()
    reader = RecordBlocks(io.BytesIO(data), framing, "bench", DEFAULT_MAX_RECORD, read_size)
    count = 0
    if delimiter is not None:
        reader.first_record()
    for block, _, _ in reader.blocks():
        count += len(framing.split(block)[0])
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25,50,100", help="MiB, comma-separated")
    parser.add_argument("--read-size", default="8MiB")
    args = parser.parse_args()
    read_size = parse_size(args.read_size)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'format':<6} {'MiB':>5} {'records':>10} {'seconds':>8} {'MB/s':>8}")
    for fmt, make, delimiter in (("csv", csv_data, ","), ("jsonl", jsonl_data, None)):
        times: dict[int, float] = {}
        for mib in sizes:
            data = make(mib * MiB)
            count, seconds = frame(data, delimiter, read_size)
            times[mib] = seconds
            print(
                f"{fmt:<6} {mib:>5} {count:>10,} {seconds:>8.2f} {len(data) / seconds / 1e6:>8.1f}"
            )
        if len(sizes) > 1:
            low, high = sizes[0], sizes[-1]
            ratio = times[high] / times[low]
            print(f"{fmt:<6} time {high}/{low} MiB: {ratio:.2f} (linear: {high / low:.2f})")
    stray = b'id,v\n1,a\n2,"opens and never closes\n' + b"3,row\n" * (max(sizes) * MiB // 6)
    started = time.perf_counter()
    try:
        frame(stray, ",", read_size)
        print("unclosed quote: NOT refused")
    except UnclosedQuoteError as exc:
        took = time.perf_counter() - started
        print(f"unclosed quote in {len(stray) / MiB:.0f} MiB: refused in {took:.2f} s")
        print(f"  {exc}")


if __name__ == "__main__":
    main()

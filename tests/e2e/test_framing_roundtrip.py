"""Real-world CSV and JSONL shapes (in the spirit of the csv-spectrum suite, plus CR-only,
CRLF, BOM, no final newline and blank lines) migrated through `migrator run` and restored at
one shard: byte for byte, or exactly as FORMAT.md §1.4 says restore normalises (a BOM and
blank lines are not records; a lone CR or a missing last line end comes back as a LF; the
header row takes the line end of the shard's first record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.cli import main
from tests.planfiles import write_plan

SAME = None  # restored byte for byte

# name: (format, key, source bytes, restored bytes or SAME)
CASES: dict[str, tuple[str, str, bytes, bytes | None]] = {
    "comma-in-quotes": (
        "csv",
        "id",
        b'id,first,last,address\n1,John,Doe,"120 any st., Anytown, ST 12345"\n',
        SAME,
    ),
    "escaped-quotes": ("csv", "id", b'id,b\n1,"ha ""ha"" ha"\n2,4\n', SAME),
    "json-in-a-field": ("csv", "id", b'id,doc\n1,"{""a"": 1, ""b"": [2, 3]}"\n', SAME),
    "newlines-in-quotes": ("csv", "id", b'id,b\n1,"line\nbreak"\n2,"CR\r\nLF\rinside"\n', SAME),
    "empty-fields": ("csv", "id", b'id,b,c\n1,,\n2,"",x\n3,"",""\n', SAME),
    "quotes-and-newlines": ("csv", "id", b'id,b\n1,"ha\n""ha""\nha"\n3,4\n', SAME),
    "utf8": ("csv", "id", 'id,name\n1,Zoë 李雷 🎬\n2,"ä, ö"\n'.encode(), SAME),
    "crlf": ("csv", "id", b'id,b\r\n1,"x\r\ny"\r\n2,z\r\n', SAME),
    "header-only": ("csv", "id", b"id,b\n", SAME),
    "empty-file": ("csv", "id", b"", SAME),
    "bom-and-blank-lines-only": ("csv", "id", b"\xef\xbb\xbf\n\r\n", b""),
    "stray-quotes": ("csv", "id", b'id,item\n1,27" monitor\n2,5" floppy\n3,a "b" c\n4,x\n', SAME),
    "cr-only": ("csv", "id", b"id,name\r1,x\r2,y\r", b"id,name\n1,x\n2,y\n"),
    "bom": ("csv", "id", b"\xef\xbb\xbfid,name\n1,x\n", b"id,name\n1,x\n"),
    "bom-crlf": ("csv", "id", b"\xef\xbb\xbfid,name\r\n1,x\r\n", b"id,name\r\n1,x\r\n"),
    "no-final-newline": ("csv", "id", b'id,b\n1,x\n2,"y\nz"', b'id,b\n1,x\n2,"y\nz"\n'),
    "crlf-no-final-newline": ("csv", "id", b"id,b\r\n1,x\r\n2,y", b"id,b\r\n1,x\r\n2,y\n"),
    "blank-lines": ("csv", "id", b"\nid,b\n\n1,x\n \n2,y\r\n\n", b"id,b\n1,x\n2,y\r\n"),
    "jsonl-empty-file": ("jsonl", "id", b"", SAME),
    "jsonl-lf": ("jsonl", "id", b'{"id": 1, "a": "x"}\n{"id": "k", "a": [1]}\n', SAME),
    "jsonl-crlf": ("jsonl", "id", b'{"id": 1}\r\n{"id": 2}\r\n', SAME),
    "jsonl-cr-only": ("jsonl", "id", b'{"id": 1}\r{"id": 2}\r', b'{"id": 1}\n{"id": 2}\n'),
    "jsonl-bom": ("jsonl", "id", b'\xef\xbb\xbf{"id": 1}\n', b'{"id": 1}\n'),
    "jsonl-no-final-newline": ("jsonl", "id", b'{"id": 1}\n{"id": 2}', b'{"id": 1}\n{"id": 2}\n'),
    "jsonl-blank-lines": (
        "jsonl",
        "id",
        b'\n{"id": 1}\n\n  \r\n{"id": 2}\n\n',
        b'{"id": 1}\n{"id": 2}\n',
    ),
}


def migrate_and_restore(
    root: Path, fmt: str, key: str, files: dict[str, bytes], shards: int
) -> Path:
    """Runs `migrator run` then `migrator restore` in this process; the restored folder."""
    src = root / "data" / "src"
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    plan = write_plan(
        root,
        datasets=f"  - {{name: ds, kind: records, format: {fmt}, source: {{kind: local,"
        f" path: data/src}}, key: {key}, shards: {shards}}}\n",
    )
    for args in (["run", plan], ["restore", plan, "--dataset", "ds", "--out", root / "out"]):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        assert done.value.code in (0, None), args
    return root / "out"


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_single_file_restores_byte_for_byte_or_as_documented(tmp_path: Path, case: str) -> None:
    fmt, key, source, restored = CASES[case]
    out = migrate_and_restore(tmp_path, fmt, key, {f"a.{fmt}": source}, 1)
    got = (out / f"shard-00000.{fmt}").read_bytes()
    assert got == (source if restored is SAME else restored)


def test_a_cr_only_csv_frames_into_its_rows_on_every_shard(tmp_path: Path) -> None:
    """A CR-only file once became one header and no record, restored into every shard."""
    rows = [b"%d,name %d" % (i, i) for i in range(200)]
    source = b"\r".join([b"id,name", *rows]) + b"\r"
    out = migrate_and_restore(tmp_path, "csv", "id", {"a.csv": source}, 4)
    restored: list[bytes] = []
    for shard in range(4):
        lines = (out / f"shard-{shard:05d}.csv").read_bytes().split(b"\n")
        assert lines[0] == b"id,name" and lines[-1] == b""
        restored += lines[1:-1]
    assert sorted(restored) == sorted(rows)


def test_a_bom_never_reaches_the_key_column(tmp_path: Path) -> None:
    """With the BOM taken as part of the header, the key column would be '\\ufeffid'."""
    source = b"\xef\xbb\xbfid,v\n1,a\n2,b\n"
    out = migrate_and_restore(tmp_path, "csv", "id", {"a.csv": source, "b.csv": b"id,v\n3,c\n"}, 1)
    assert (out / "shard-00000.csv").read_bytes() == b"id,v\n1,a\n2,b\n3,c\n"


def run_refused(root: Path, files: dict[str, bytes], capsys: pytest.CaptureFixture[str]) -> str:
    """`migrator run` on these CSV files, which must stop with exit 3: its last error line."""
    src = root / "data" / "src"
    src.mkdir(parents=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    plan = write_plan(
        root,
        datasets="  - {name: ds, kind: records, format: csv, source: {kind: local,"
        " path: data/src}, key: id, shards: 2}\n",
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["run", str(plan)])
    assert done.value.code == 3
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_differing_header_is_refused_showing_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = ",".join(f"column_{i}" for i in range(60))
    files = {
        "a.csv": f"id,{wide},price\n1,{'x,' * 60}3\n".encode(),
        "b.csv": f"id,{wide},cost\n2,{'y,' * 60}4\n".encode(),
    }
    error = run_refused(tmp_path, files, capsys)
    assert "b.csv:1: CSV header differs from the first file's header" in error
    assert "column_59,cost'" in error and "column_59,price'" in error  # where they differ
    assert "column_0," not in error  # a wide header is shown from near the difference
    assert len(error) < 600


def test_a_key_column_named_twice_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = run_refused(tmp_path, {"a.csv": b"id,name,id\n1,x,2\n"}, capsys)
    assert "a.csv:1: key field 'id' names 2 columns of the CSV header (columns 1, 3)" in error

"""Keys beyond 64 bits and records orjson refuses, through the CLI: run, verify, restore byte for
byte, then a sync that changes one big-integer-keyed record and deletes another."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from migrator.cli import main
from tests.planfiles import restored_records, write_plan

DATASETS = """\
  - {name: people, kind: records, format: jsonl, source: {kind: local, path: data/people},
     key: user_id, shards: 4}
  - {name: ledger, kind: records, format: csv, source: {kind: local, path: data/ledger},
     key: id, shards: 3}
"""
CSV_HEADER = b"id,amount"

# Keys orjson cannot read exactly, and records it refuses though routing needs only their key.
ODD_JSONL = [
    b'{"user_id": 18446744073709551616, "v": 1}',  # 2^64
    b'{"user_id": 340282366920938463463374607431768211456, "v": 1}',  # 2^128
    b'{"user_id": -9223372036854775809, "v": 1}',  # -2^63 - 1
    b'{"user_id": 18446744073709551615, "v": 1}',  # 2^64 - 1: read by orjson
    b'{"user_id": -0, "v": "the key is 0"}',
    b'{"user_id": "js-1", "note": "cut emoji \\ud83d", "raw": "caf\xc3\xa9"}',
    b'{"note": "\\udfff first", "user_id": 77, "user_id": "last-wins"}',
    b'{"user_id": "\\ud800", "v": "a lone surrogate as the key"}',
    b'{"user_id": "u-big", "n": ' + b"9" * 5000 + b', "f": 1e999}',
    b'{"user_id": "u-deep", "z": "\\ud800", "n": ' + b"[" * 900 + b"]" * 900 + b"}",
]
ODD_CSV = [
    b"18446744073709551616,1",
    b"340282366920938463463374607431768211456,2",
    b"-9223372036854775809,3",
    b'"' + b"1" + b"0" * 3000 + b'",4',
    b"-0,5",
    b"007,6",
]


def cli(*args: str | Path) -> int:
    """`migrator ARGS` in this process, through the command's own entry point."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def write_sources(root: Path, jsonl: list[bytes], rows: list[bytes]) -> None:
    people, ledger = root / "data/people", root / "data/ledger"
    people.mkdir(parents=True, exist_ok=True)
    ledger.mkdir(parents=True, exist_ok=True)
    (people / "a.jsonl").write_bytes(b"".join(r + b"\n" for r in jsonl))
    (ledger / "a.csv").write_bytes(CSV_HEADER + b"\n" + b"".join(r + b"\n" for r in rows))


def restore_both(root: Path, out: str) -> tuple[Counter[bytes], Counter[bytes]]:
    for name in ("people", "ledger"):
        assert (
            cli("restore", root / "plan.yaml", "--dataset", name, "--out", root / out / name) == 0
        )
    return (
        restored_records(root / out / "people"),
        restored_records(root / out / "ledger", csv_header=CSV_HEADER),
    )


def test_big_integer_and_lone_surrogate_records_migrate_restore_and_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_plan(tmp_path, datasets=DATASETS)
    plain = [b'{"user_id": "u%04d", "v": %d}' % (i, i) for i in range(200)]
    rows = [b"r%04d,%d" % (i, i) for i in range(100)]
    jsonl = [*ODD_JSONL, *plain]
    write_sources(tmp_path, jsonl, [*ODD_CSV, *rows])

    assert cli("run", "plan.yaml") == 0
    assert cli("verify", "plan.yaml") == 0
    people, ledger = restore_both(tmp_path, "out1")
    assert people == Counter(jsonl)
    assert ledger == Counter([*ODD_CSV, *rows])

    # Sync: the 2^64 record changes, the 2^128 one and the 5000-digit CSV row are deleted;
    # deletions find their records by key, so route and restore must key them alike.
    changed = b'{"user_id": 18446744073709551616, "v": 2, "note": "\\udbff"}'
    jsonl2 = [changed, *ODD_JSONL[2:], *plain]
    rows2 = [r for r in ODD_CSV if not r.startswith(b'"1000')] + rows
    write_sources(tmp_path, jsonl2, rows2)
    assert cli("run", "plan.yaml") == 0
    assert cli("verify", "plan.yaml") == 0
    people, ledger = restore_both(tmp_path, "out2")
    assert people == Counter(jsonl2)
    assert ledger == Counter(rows2)
    # The first generation still restores as it was captured.
    assert (
        cli("restore", "plan.yaml", "--dataset", "people", "--out", "out3", "--generation", "1")
        == 0
    )
    assert restored_records(tmp_path / "out3") == Counter(jsonl)

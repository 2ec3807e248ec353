"""The bad-input matrix, as an operator meets it through `migrator`: each bad input stops with
one clear line naming its file and line (or object key, bucket, path), nothing is lost, and the
same command resumes once the cause is fixed; `on_bad_record: quarantine` sets bad records
aside in an encrypted dead-letter area instead, counted and readable back byte for byte.

Valid but unusual inputs (duplicate keys, unicode keys, non-UTF-8 CSV, a record larger than a
chunk, empty files) are rows too: they must migrate intact.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import random
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

import migrator.write.deadletter as deadletter
import migrator.write.route as route
from migrator.cli import main
from migrator.demo.motoserver import MotoServer, s3_client
from migrator.keys.keyring import key_context
from migrator.keys.keyring_doc import first_keyring
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.write.route_blocks import BadRecord
from tests.planfiles import (
    AWS_TEST_ENV,
    files_below,
    flip_bit,
    restored_records,
    run_cli,
    s3_destination,
    write_plan,
)

HEADER = b"video_id,title,duration_s"
FIX_HINT = ". Fix it and run again to resume, or set the dataset's on_bad_record: quarantine"


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def last_error(self) -> str:
        """The one error line (progress bars may come before it on stderr)."""
        return self.err.strip().splitlines()[-1]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """`migrator ARGS` in this process, through the same entry point as the command."""

    def invoke(*args: str | Path) -> Done:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return invoke


# --- sites -----------------------------------------------------------------------------------


def good_jsonl(i: int) -> bytes:
    return b'{"user_id": "u%04d", "name": "n%d", "bio": "%s"}' % (i, i, b"x" * (i % 7))


def good_csv(i: int) -> bytes:
    return b'v%04d,"title, %d",%d' % (i, i, i % 600)


@dataclass
class Site:
    root: Path
    fmt: str

    @property
    def plan(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def src(self) -> Path:
        return self.root / "data" / "src"

    @property
    def dest(self) -> Path:
        return self.root / "dest" / "t" / "ds"

    @property
    def header(self) -> bytes | None:
        return HEADER if self.fmt == "csv" else None

    def write(self, name: str, records: list[bytes], *, last_newline: bool = True) -> Path:
        """A source file of these records (CSV: under the header row)."""
        lines = ([HEADER] if self.fmt == "csv" else []) + records
        body = b"\n".join(lines) + (b"\n" if last_newline and lines else b"")
        path = self.src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path

    def restore(self, cli: Any, out: Path | None = None) -> Counter[bytes]:
        out = out or self.root / f"restored-{uuid.uuid4().hex[:6]}"
        done = cli("restore", self.plan, "--dataset", "ds", "--out", out)
        assert done.code == 0, done.err
        return restored_records(out, csv_header=self.header)


def make_site(
    root: Path,
    fmt: str,
    *,
    quarantine: bool = False,
    chunk_size: str = "64KiB",
    memory_budget: str = "2MiB",
    destination: str = "{kind: local, path: dest, prefix: t/}",
) -> Site:
    key = "video_id" if fmt == "csv" else "user_id"
    policy = ", on_bad_record: quarantine" if quarantine else ""
    write_plan(
        root,
        datasets=f"  - {{name: ds, kind: records, format: {fmt}, source: {{kind: local,"
        f" path: data/src}}, key: {key}, shards: 3{policy}}}\n",
        chunk_size=chunk_size,
        memory_budget=memory_budget,
        destination=destination,
    )
    return Site(root, fmt)


# --- bad records: fail, then resume once fixed; or quarantine ------------------------------

# case: (format, the bad record, the reason routing gives; None: malformed JSON, by orjson)
BAD_RECORDS: dict[str, tuple[str, bytes, str | None]] = {
    "malformed-json": (
        "jsonl",
        b'{"user_id": "u-bad", oops}',
        "malformed JSON (Expecting property name enclosed in double quotes at byte 21 of the"
        " record)",
    ),
    "missing-key": ("jsonl", b'{"name": "no key here"}', "key field 'user_id' is missing or null"),
    "null-key": (
        "jsonl",
        b'{"user_id": null, "name": "x"}',
        "key field 'user_id' is missing or null",
    ),
    "empty-key": (
        "jsonl",
        b'{"user_id": ""}',
        "key field 'user_id' must be a non-empty string or an integer",
    ),
    "not-an-object": ("jsonl", b'["user_id", 1]', "record is not a JSON object"),
    "non-utf8-jsonl": (
        "jsonl",
        b'{"user_id": "u-\xff\xfe"}',
        "not UTF-8 (byte 0xff at offset 15 of the record)",
    ),
    "csv-ragged-short": ("csv", b"v-bad,only two", "CSV row has 2 fields, the header has 3"),
    "csv-ragged-long": ("csv", b'v-bad,"a, b",3,extra', "CSV row has 4 fields, the header has 3"),
    "csv-empty-key": ("csv", b',"no key",1', "key field 'video_id' is empty"),
    # An unclosed quote runs to the end of the file: the bad record is the file's tail, named
    # where its quote opened (line 7, after the header and 5 rows of b.csv).
    "csv-unclosed-quote": (
        "csv",
        b'v-bad,"never closed,1\nv9999,tail,2',
        "CSV quoted field opened at line 7, byte 137 never closes (it runs to the end of the file)",
    ),
}


def bad_site(
    root: Path, case: str, *, quarantine: bool
) -> tuple[Site, list[bytes], Path, int, int]:
    """Two files of good records; the second holds the bad one. Returns the site, the good
    records, the bad file, and the bad record's line and byte offset."""
    fmt, bad, _ = BAD_RECORDS[case]
    site = make_site(root, fmt, quarantine=quarantine)
    good = good_csv if fmt == "csv" else good_jsonl
    first = [good(i) for i in range(20)]
    before, after = [good(i) for i in range(20, 25)], [good(i) for i in range(25, 35)]
    if case == "csv-unclosed-quote":
        after = []
    site.write("a." + fmt, first)
    path = site.write("b." + fmt, [*before, bad, *after], last_newline=bool(after))
    head = [HEADER] if fmt == "csv" else []
    line = len(head) + len(before) + 1
    offset = sum(len(r) + 1 for r in head + before)
    return site, first + before + after, path, line, offset


def reason_of(case: str) -> str:
    _, bad, reason = BAD_RECORDS[case]
    if reason is not None:
        return reason
    import orjson

    try:
        orjson.loads(bad)
    except orjson.JSONDecodeError as exc:
        return f"malformed JSON ({exc})"
    raise AssertionError("the record parses")


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_bad_record_fails_naming_file_line_and_offset_and_resumes_once_fixed(
    tmp_path: Path, cli: Any, case: str
) -> None:
    site, good, path, line, offset = bad_site(tmp_path, case, quarantine=False)
    done = cli("run", site.plan)
    assert done.code == 3, done.err
    expected = f"migrator: error: {path}:{line}: {reason_of(case)}; the record starts at byte"
    assert done.last_error == f"{expected} {offset}{FIX_HINT}"
    assert "Traceback" not in done.err

    # The operator fixes the file (here: drops the record) and runs the same command again.
    data = path.read_bytes()
    bad = BAD_RECORDS[case][1]
    path.write_bytes(data[:offset] + data[offset + len(bad) + 1 :])
    again = cli("run", site.plan)
    assert again.code == 0, again.err
    assert "quarantined" not in again.out
    assert site.restore(cli) == Counter(good)
    assert not (site.dest / "_deadletters").exists()  # fail never writes dead letters


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_bad_record_is_quarantined_counted_sealed_and_read_back_byte_for_byte(
    tmp_path: Path, cli: Any, case: str
) -> None:
    site, good, path, line, offset = bad_site(tmp_path, case, quarantine=True)
    bad = BAD_RECORDS[case][1]
    done = cli("run", site.plan)
    assert done.code == 0, done.err
    assert (
        f"ds: 1 bad records quarantined in generation 1, not migrated; read them with:"
        f" migrator deadletters {site.plan} --dataset ds"
    ) in done.out
    assert site.restore(cli) == Counter(good)  # every good record, and only those

    status = json.loads(cli("status", site.plan, "--json").out)
    assert status["datasets"][0]["dead_letters"] == [{"generation": 1, "records": 1}]
    assert "ds: records quarantined (dead letters): generation 1: 1" in cli("status", site.plan).out

    listed = cli("deadletters", site.plan, "--dataset", "ds")
    assert listed.code == 0, listed.err
    assert listed.out.splitlines() == [
        f"b.{site.fmt}:{line}: {reason_of(case)}; the record starts at byte {offset}",
        "dataset ds generation 1: 1 records quarantined",
    ]
    doc = json.loads(cli("deadletters", site.plan, "--dataset", "ds", "--json").out)
    assert doc["records"] == 1
    assert doc["dead_letters"] == [
        {
            "file": f"b.{site.fmt}",
            "line": line,
            "offset": offset,
            "reason": reason_of(case),
            "data_base64": base64.b64encode(bad).decode(),
        }
    ]
    out = tmp_path / "dead"
    written = cli("deadletters", site.plan, "--dataset", "ds", "--out", out)
    assert written.code == 0, written.err
    head = HEADER + b"\n" if site.fmt == "csv" else b""
    assert files_below(out) == {f"b.{site.fmt}": head + bad + b"\n"}

    # Sealed at the destination: under the dataset's dead-letter prefix, never in the clear.
    (stored,) = (site.dest / "_deadletters" / "g000001").iterdir()
    assert stored.name == "00000000.mgc"
    assert stored.read_bytes()[:4] == b"MGRC" and bad not in stored.read_bytes()

    # Fixed in place and run again (a sync): it migrates, and nothing is quarantined.
    fixed = good_csv(9000) if site.fmt == "csv" else good_jsonl(9000)
    data = path.read_bytes()
    path.write_bytes(data[:offset] + fixed + b"\n" + data[offset + len(bad) + 1 :])
    synced = cli("run", site.plan)
    assert synced.code == 0, synced.err
    assert "quarantined" not in synced.out
    assert site.restore(cli) == Counter([*good, fixed])
    assert cli("deadletters", site.plan, "--dataset", "ds").out.splitlines() == [
        "dataset ds generation 2: 0 records quarantined"
    ]


def test_an_interrupted_quarantining_run_neither_loses_nor_doubles_dead_letters(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, "jsonl", quarantine=True)
    good: list[bytes] = []
    bads: list[bytes] = []
    for f in range(4):
        records = [good_jsonl(100 * f + i) for i in range(10)]
        bad = b'{"user_id": null, "file": %d}' % f
        site.write(f"f{f}.jsonl", [*records[:4], bad, *records[4:]])
        good += records
        bads.append(bad)
    monkeypatch.setattr(deadletter, "FLUSH_BYTES", 0)  # every dead letter on disk at once
    real, calls = route.route_file, []

    def crash_after_third_file(*args: Any) -> Any:
        result = real(*args)
        calls.append(1)
        if len(calls) == 3:  # its dead letter is on disk, its index (the checkpoint) is not
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(route, "route_file", crash_after_third_file)
    assert cli("run", site.plan).code == 130
    monkeypatch.setattr(route, "route_file", real)
    done = cli("run", site.plan)
    assert done.code == 0, done.err
    assert "ds: 4 bad records quarantined in generation 1" in done.out
    doc = json.loads(cli("deadletters", site.plan, "--dataset", "ds", "--json").out)
    assert [(d["file"], d["line"]) for d in doc["dead_letters"]] == [
        (f"f{f}.jsonl", 5) for f in range(4)
    ]
    assert [base64.b64decode(d["data_base64"]) for d in doc["dead_letters"]] == bads
    assert site.restore(cli) == Counter(good)
    assert cli("verify", site.plan).code == 0  # the checks the gate requires
    gate = cli("cutover", site.plan, "--json")  # the gate leaves quarantined records out too
    assert gate.code == 0, gate.out + gate.err


def test_routing_in_worker_processes_sets_aside_the_same_records(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route, "BLOCK_BYTES", 4096)  # many blocks, bad records in several
    good = [good_jsonl(i) for i in range(3000)]
    bad = [b'{"user_id": null, "n": %d}' % i for i in range(0, 3000, 250)]
    lines = [x for i, r in enumerate(good) for x in ([r, bad[i // 250]] if i % 250 == 0 else [r])]
    letters = []
    for processes in (1, 2):
        site = make_site(tmp_path / f"p{processes}", "jsonl", quarantine=True)
        site.write("a.jsonl", lines)
        monkeypatch.setattr(route, "routing_processes", lambda total, workers, n=processes: n)
        assert cli("run", site.plan).code == 0
        doc = json.loads(cli("deadletters", site.plan, "--dataset", "ds", "--json").out)
        letters.append(doc["dead_letters"])
        assert site.restore(cli) == Counter(good)
    assert letters[0] == letters[1]
    assert [base64.b64decode(d["data_base64"]) for d in letters[0]] == bad
    assert [d["line"] for d in letters[0]] == [i + i // 250 + 2 for i in range(0, 3000, 250)]


def test_a_dead_letter_spool_torn_by_a_crash_is_cut_back_to_the_checkpointed_files(
    tmp_path: Path,
) -> None:
    spool = deadletter.DeadLetterSpool(tmp_path)
    spool.restore(0, create=True)
    for index in range(3):
        spool.add(
            index, f"f{index}.jsonl", [BadRecord(index + 1, 10 * index, "why", b"r%d" % index)]
        )
    spool.make_durable()
    whole = spool.path.read_bytes()
    spool.path.write_bytes(whole[:-2])  # the last entry torn mid-write
    deadletter.DeadLetterSpool(tmp_path).restore(3, create=True)
    assert [d.file for d in deadletter.iter_spool(spool.path)] == ["f0.jsonl", "f1.jsonl"]
    spool.path.write_bytes(whole)
    deadletter.DeadLetterSpool(tmp_path).restore(1, create=True)  # checkpoint: file 0 routed
    assert list(deadletter.iter_spool(spool.path)) == [
        deadletter.DeadLetter("f0.jsonl", 1, 0, "why", b"r0")
    ]


def test_tampered_or_missing_dead_letters_are_refused_by_object_key(
    tmp_path: Path, cli: Any
) -> None:
    site = make_site(tmp_path, "jsonl", quarantine=True)
    bads = [b'{"no_key": "%s"}' % (b"z" * 40_000) for _ in range(3)]  # 2 chunks of 64 KiB
    site.write("a.jsonl", [good_jsonl(1), *bads, good_jsonl(2)])
    assert cli("run", site.plan).code == 0
    folder = site.dest / "_deadletters" / "g000001"
    assert sorted(p.name for p in folder.iterdir()) == ["00000000.mgc", "00000001.mgc"]
    first, second = folder / "00000000.mgc", folder / "00000001.mgc"
    pristine = second.read_bytes()

    flip_bit(second, -5)
    done = cli("deadletters", site.plan, "--dataset", "ds", "--out", tmp_path / "x")
    assert done.code == 4
    assert done.last_error.startswith("migrator: error: ds/_deadletters/g000001/00000001.mgc: ")
    assert "authentication failed" in done.last_error

    second.unlink()
    done = cli("deadletters", site.plan, "--dataset", "ds")
    assert done.code == 4
    assert done.last_error == (
        "migrator: error: ds/_deadletters/g000001/00000001.mgc: dead-letter chunk 1 of 2 is missing"
    )
    second.write_bytes(pristine)
    flip_bit(first, 6)  # the kind byte: another kind of chunk is not a dead-letter chunk
    done = cli("deadletters", site.plan, "--dataset", "ds")
    assert done.code == 4 and "ds/_deadletters/g000001/00000000.mgc" in done.last_error
    flip_bit(first, 6)
    out = tmp_path / "dead"
    assert cli("deadletters", site.plan, "--dataset", "ds", "--out", out).code == 0
    assert files_below(out) == {"a.jsonl": b"".join(b + b"\n" for b in bads)}


# --- valid but unusual input: migrates intact --------------------------------------------


def test_duplicate_keys_migrate_as_a_multiset(tmp_path: Path, cli: Any) -> None:
    site = make_site(tmp_path, "jsonl")
    same = b'{"user_id": "dup", "v": 1}'
    records = [same, same, b'{"user_id": "dup", "v": 2}', b'{"user_id": 7}', b'{"user_id": 7}']
    site.write("a.jsonl", records[:3])
    site.write("b.jsonl", [*records[3:], same])
    assert cli("run", site.plan).code == 0
    assert site.restore(cli) == Counter([*records, same])
    assert cli("verify", site.plan).code == 0


def test_unicode_keys_migrate_intact_and_an_escaped_key_is_the_same_key(
    tmp_path: Path, cli: Any
) -> None:
    site = make_site(tmp_path, "jsonl")
    records = [
        '{"user_id": "Zoë", "n": 1}'.encode(),
        '{"user_id": "李雷", "n": 2}'.encode(),
        '{"user_id": "Bob 🎬", "n": 3}'.encode(),
        '{"user_id": "ü", "n": 4}'.encode(),  # composed
        b'{"user_id": "\\u00fc", "n": 5}',  # the same key, escaped
        '{"user_id": "ü", "n": 6}'.encode(),  # decomposed: another key
    ]
    site.write("a.jsonl", records)
    assert cli("run", site.plan).code == 0
    out = tmp_path / "out"
    assert site.restore(cli, out) == Counter(records)
    shard_of = {r: p.name for p in out.iterdir() for r in p.read_bytes().splitlines()}
    assert shard_of[records[3]] == shard_of[records[4]]


def test_csv_rows_that_are_not_utf8_migrate_byte_for_byte(tmp_path: Path, cli: Any) -> None:
    site = make_site(tmp_path, "csv")
    rows = [b"v1,caf\xe9,1", b'v2,"quoted \xff\xfe, latin-1",2', b'"v\xe93",key not UTF-8,3']
    site.write("a.csv", rows)
    assert cli("run", site.plan).code == 0
    assert site.restore(cli) == Counter(rows)
    assert cli("verify", site.plan).code == 0


def test_a_record_larger_than_the_chunk_size_migrates_intact(tmp_path: Path, cli: Any) -> None:
    # A budget of 4 MiB admits records of 512 KiB (max_record_size: an eighth of it).
    site = make_site(tmp_path, "jsonl", chunk_size="64KiB", memory_budget="4MiB")
    blob = random.Random(5).randbytes(150_000).hex().encode()  # compresses only to half
    huge = b'{"user_id": "big", "blob": "%s"}' % blob  # 300 KB: over 4 chunks' worth
    records = [good_jsonl(i) for i in range(50)] + [huge] + [good_jsonl(i) for i in range(50, 60)]
    site.write("a.jsonl", records)
    assert cli("run", site.plan).code == 0
    assert site.restore(cli) == Counter(records)
    biggest = max(p.stat().st_size for p in site.dest.rglob("r/*.mgc"))
    assert biggest > 64 * 1024  # the record went whole into one chunk
    assert cli("verify", site.plan).code == 0


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_empty_files_migrate_nothing_and_stop_nothing(tmp_path: Path, cli: Any, fmt: str) -> None:
    site = make_site(tmp_path, fmt)
    good = good_csv if fmt == "csv" else good_jsonl
    records = [good(i) for i in range(12)]
    site.write("a." + fmt, records[:6])
    (site.src / f"b-empty.{fmt}").write_bytes(b"")
    (site.src / f"c-blank-lines.{fmt}").write_bytes(b"\n\n  \n")
    site.write("d." + fmt, records[6:])
    if fmt == "csv":
        site.write("e-header-only.csv", [])
    done = cli("run", site.plan)
    assert done.code == 0, done.err
    assert site.restore(cli) == Counter(records)


# --- stored objects: corrupted, tampered, wrong or rotated key ---------------------------


@pytest.fixture
def migrated(tmp_path: Path, cli: Any) -> tuple[Site, list[bytes]]:
    site = make_site(tmp_path, "jsonl")
    records = [good_jsonl(i) for i in range(400)]
    site.write("a.jsonl", records)
    assert cli("run", site.plan).code == 0
    return site, records


def test_dead_letters_of_every_generation_read_back_after_a_new_data_key(
    tmp_path: Path, cli: Any
) -> None:
    site = make_site(tmp_path, "jsonl", quarantine=True)
    site.write("a.jsonl", [good_jsonl(1), b'{"user_id": null, "g": 1}', good_jsonl(2)])
    assert cli("run", site.plan).code == 0
    rotated = cli("keys", "rotate", site.plan, "--new-data-key")
    assert rotated.code == 0, rotated.err
    site.write("b.jsonl", [b'{"user_id": null, "g": 2}'])
    assert cli("run", site.plan).code == 0  # generation 2: sealed under the new data key
    for generation, bad in (
        (1, [b'{"user_id": null, "g": 1}']),
        (2, [b'{"user_id": null, "g": 1}', b'{"user_id": null, "g": 2}']),
    ):
        done = cli(
            "deadletters", site.plan, "--dataset", "ds", "--generation", generation, "--json"
        )
        assert done.code == 0, done.err
        letters = json.loads(done.out)["dead_letters"]
        assert [base64.b64decode(d["data_base64"]) for d in letters] == bad


def test_a_corrupted_or_tampered_chunk_is_named_by_verify_and_restore(
    migrated: tuple[Site, list[bytes]], cli: Any
) -> None:
    site, records = migrated
    chunk = sorted(site.dest.rglob("r/*.mgc"))[0]
    key = chunk.relative_to(site.dest.parent).as_posix()
    pristine = chunk.read_bytes()
    for damaged, error in (
        (flipped(pristine, len(pristine) // 2), "TamperedError"),
        (pristine[:-100], "TruncatedError"),
    ):
        chunk.write_bytes(damaged)
        verify = cli("verify", site.plan, "--json")
        assert verify.code == 1
        (problem,) = json.loads(verify.out)["problems"]
        assert (problem["object_key"], problem["error"]) == (key, error)
        restore = cli("restore", site.plan, "--dataset", "ds", "--out", site.root / "r")
        assert restore.code == 4
        assert restore.last_error.startswith(f"migrator: error: {key}: ")
        chunk.write_bytes(pristine)  # a good copy put back: everything reads again
    assert cli("verify", site.plan).code == 0
    assert site.restore(cli) == Counter(records)


def flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1 :]


def test_a_wrong_kek_names_the_wrapped_key_and_the_kek_file(
    migrated: tuple[Site, list[bytes]], cli: Any
) -> None:
    site, records = migrated
    kek = site.root / "kek.key"
    os.replace(kek, site.root / "kek.orig")
    init_kek_file(kek)
    for args in (
        ("run", site.plan),
        ("restore", site.plan, "--dataset", "ds", "--out", site.root / "r"),
    ):
        done = cli(*args)
        assert done.code == 4, done.err
        line = done.last_error
        assert line.startswith("migrator: error: ds/_keys/datakey.json: "), line
        assert f"{kek} has KEK id " in line, line
    os.replace(site.root / "kek.orig", kek)
    assert cli("run", site.plan).code == 0
    assert site.restore(cli) == Counter(records)


def test_a_rotated_data_key_names_every_chunk_sealed_under_the_old_one(
    migrated: tuple[Site, list[bytes]], cli: Any
) -> None:
    site, records = migrated
    wrapped = site.dest / "_keys" / "datakey.json"
    pristine = wrapped.read_bytes()
    owner = LocalKeyProvider(site.root / "kek.key")
    _, other = owner.generate_data_key(key_context("test", "ds"))
    # Another data key, in a keyring the owner signed (an unsigned one is refused outright).
    wrapped.write_bytes(first_keyring("test", "ds", other).signed(owner.signer).to_json())
    verify = json.loads(cli("verify", site.plan, "--json").out)
    chunks = sorted(p.relative_to(site.dest.parent).as_posix() for p in site.dest.rglob("*.mgc"))
    named = {p["object_key"] for p in verify["problems"]}
    assert named and named <= set(chunks)
    assert {p["error"] for p in verify["problems"]} == {"WrongKeyError"}
    restore = cli("restore", site.plan, "--dataset", "ds", "--out", site.root / "r")
    assert restore.code == 4
    assert restore.last_error.startswith("migrator: error: ds/")
    assert "key" in restore.last_error
    wrapped.write_bytes(pristine)
    assert cli("verify", site.plan).code == 0
    assert site.restore(cli) == Counter(records)


# --- a full disk under state_dir ---------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` at path (True), or False where mounting is not permitted."""
    path.mkdir(parents=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def command(*args: str | Path) -> Done:
    """`migrator ARGS` in a process of its own."""
    done = run_cli(*args, cwd=Path.cwd())
    return Done(done.returncode, done.stdout, done.stderr)


class FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def test_a_full_disk_under_state_dir_names_the_state_path_and_resumes_when_space_returns(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, "jsonl")
    records = [good_jsonl(i) + b" " * 200 for i in range(6000)]  # 1.4 MB of spools to write
    site.write("a.jsonl", records)
    state = tmp_path / "statefs"
    site.plan.write_text(site.plan.read_text().replace("state_dir: state", f"state_dir: {state}"))
    with small_tmpfs(state, "1m") as real:
        run = cli
        if real:  # the command itself, in its own process, as an operator runs it
            run = command
        else:  # no mount here: the spool's writes fail as on a full disk (ENOSPC)
            opened = Path.open

            def full(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
                fh = opened(self, mode, *args, **kwargs)
                return FullDisk(fh) if mode == "ab" and self.suffix == ".spool" else fh

            monkeypatch.setattr(Path, "open", full)
        done = run("run", site.plan)
        assert done.code == 3, done.err
        line = done.last_error
        assert line.startswith(f"migrator: error: {state}/"), line
        assert "No space left on device" in line or "disk is full" in line, line
        assert "Traceback" not in done.err

        if real:  # space returns
            subprocess.run(["mount", "-o", "remount,size=64m", str(state)], check=True)
        else:
            monkeypatch.undo()
        again = run("run", site.plan)
        assert again.code == 0, again.err
        assert site.restore(cli) == Counter(records)
        assert cli("verify", site.plan).code == 0


# --- the destination: a bucket that does not exist or denies access ----------------------


def s3_site(root: Path, endpoint_url: str, bucket: str) -> tuple[Site, list[bytes]]:
    site = make_site(root, "jsonl", destination=s3_destination(endpoint_url, bucket))
    records = [good_jsonl(i) for i in range(50)]
    site.write("a.jsonl", records)
    return site, records


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, str(tmp_path / value) if name.endswith("_FILE") else value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.mark.integration
@pytest.mark.usefixtures("aws_env")
def test_a_bucket_that_does_not_exist_is_named_and_the_run_resumes_once_it_does(
    tmp_path: Path, cli: Any, moto_server: MotoServer
) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    site, records = s3_site(tmp_path, moto_server.endpoint_url, bucket)
    done = cli("run", site.plan)
    assert done.code == 3, done.err
    line = done.last_error  # the first request names the bucket and the key it was for
    assert line.startswith(f"migrator: error: s3://{bucket}/t/ds/_keys/"), line
    assert line.endswith(": NoSuchBucket: The specified bucket does not exist"), line
    s3_client(moto_server.endpoint_url).create_bucket(Bucket=bucket)
    assert cli("run", site.plan).code == 0
    assert site.restore(cli) == Counter(records)


@pytest.mark.integration
@pytest.mark.usefixtures("aws_env")
def test_a_bucket_that_denies_access_is_named_and_the_run_resumes_once_allowed(
    tmp_path: Path, cli: Any, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's IAM enforcement: a user whose policy denies s3:PutObject on the bucket."""
    url = moto_server.endpoint_url
    bucket = f"denied-{uuid.uuid4().hex[:12]}"
    s3_client(url).create_bucket(Bucket=bucket)
    user = f"runner-{uuid.uuid4().hex[:8]}"
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
    iam.create_user(UserName=user)
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="deny-put", PolicyDocument=json.dumps(deny))
    access = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", access["SecretAccessKey"])
    site, records = s3_site(tmp_path, url, bucket)
    with moto_authorization(url):
        done = cli("run", site.plan)
    assert done.code == 3, done.err
    line = done.last_error
    assert line.startswith(f"migrator: error: s3://{bucket}/t/ds/_keys/"), line
    assert line.endswith(": AccessDenied: Access Denied"), line
    iam.delete_user_policy(UserName=user, PolicyName="deny-put")  # access granted
    allow = {"Version": "2012-10-17", "Statement": [deny["Statement"][0]]}
    iam.put_user_policy(UserName=user, PolicyName="allow", PolicyDocument=json.dumps(allow))
    with moto_authorization(url):
        again = cli("run", site.plan)
        restored = site.restore(cli)
    assert again.code == 0, again.err
    assert restored == Counter(records)


@contextlib.contextmanager
def moto_authorization(endpoint_url: str) -> Iterator[None]:
    """moto checks every request against its IAM policies inside this block (the session
    server is shared: it is switched back off whatever happens)."""
    import urllib.request

    def reset(count: str) -> str:
        """Sets how many requests moto lets through unchecked; returns the previous count."""
        request = urllib.request.Request(
            f"{endpoint_url}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only
        with opener.open(request, timeout=10) as answer:
            return str(json.loads(answer.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    previous = reset("0")
    try:
        yield
    finally:
        reset(previous)

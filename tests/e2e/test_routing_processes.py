"""Routing whole files in worker processes (write/route_pool.py) gives what routing in the run's
own process gives: the same routed output and dead letters, the same error naming file, line and
byte, and a source that cannot be sent to a process routed in this one."""

from __future__ import annotations

import base64
import json
from collections import Counter
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import migrator.write.route_pool as route_pool
from migrator.errors import StateError
from migrator.sources.local import LocalSource
from migrator.write.route import RecordsSpec
from tests.e2e.test_bad_input_matrix import cli as cli_fixture
from tests.e2e.test_bad_input_matrix import good_csv, good_jsonl, make_site

cli = cli_fixture


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return send_to_processes(monkeypatch)


def send_to_processes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Files are routed in two worker processes, whatever their size; the names sent."""
    names: list[str] = []
    real = route_pool.FilePool.submit

    def submit(self: route_pool.FilePool, src: Any, slot: int, folder: Path) -> Any:
        names.append(src.name)
        return real(self, src, slot, folder)

    monkeypatch.setattr(route_pool.FilePool, "submit", submit)
    monkeypatch.setattr(route_pool, "file_processes", lambda *sizes: 2)
    return names


def _routed_bytes(root: Path) -> dict[str, bytes]:
    folder = root / "state" / "routed"
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in (".records", ".digests", ".dead")
    }


def _sites(tmp_path: Path, fmt: str, quarantine: bool, files: dict[str, list[bytes]]) -> list[Any]:
    sites = []
    for name in ("one", "many"):
        site = make_site(tmp_path / name, fmt, quarantine=quarantine)
        for file, records in files.items():
            site.write(file, records)
        sites.append(site)
    return sites


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_files_routed_in_processes_match_routing_here(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    good = good_csv if fmt == "csv" else good_jsonl
    bad = b"v9999,two fields" if fmt == "csv" else b'{"user_id": null}'
    files = {
        f"f{f}.{fmt}": [good(100 * f + i) for i in range(60)] + ([bad] if f % 2 else [])
        for f in range(6)
    }
    one, many = _sites(tmp_path, fmt, True, files)
    assert cli("run", one.plan).code == 0  # small: routed in this process
    names = send_to_processes(monkeypatch)
    done = cli("run", many.plan)
    assert sorted(names) == sorted(files)
    assert done.code == 0, done.err
    assert _routed_bytes(many.root) == _routed_bytes(one.root)
    expected = Counter(r for records in files.values() for r in records if r != bad)
    assert many.restore(cli) == expected
    letters = json.loads(cli("deadletters", many.plan, "--dataset", "ds", "--json").out)
    assert [base64.b64decode(d["data_base64"]) for d in letters["dead_letters"]] == [bad] * 3


def test_a_bad_record_in_a_worker_process_stops_the_run_naming_it(
    tmp_path: Path, cli: Any, sent: list[str]
) -> None:
    files = {f"f{f}.jsonl": [good_jsonl(100 * f + i) for i in range(50)] for f in range(4)}
    files["f2.jsonl"].insert(7, b'{"user_id": ""}')
    (site,) = _sites(tmp_path, "jsonl", False, files)[1:]
    done = cli("run", site.plan)
    assert done.code != 0 and "f2.jsonl" in sent
    assert "f2.jsonl:8: key field 'user_id'" in done.err, done.err
    files["f2.jsonl"].pop(7)
    site.write("f2.jsonl", files["f2.jsonl"])
    before = len(sent)
    done = cli("run", site.plan)  # resumes: the files routed before are not routed again
    assert done.code == 0, done.err
    assert "f2.jsonl" in sent[before:] and len(sent) - before < len(files)
    assert site.restore(cli) == Counter(r for records in files.values() for r in records)


def test_a_source_that_cannot_be_sent_is_routed_here(tmp_path: Path) -> None:
    class Unsendable(LocalSource):
        def __reduce__(self) -> Any:
            raise TypeError("holds a client")

    spec = RecordsSpec("ds", 1, "jsonl", "user_id", 4, Unsendable(tmp_path))
    with route_pool.FilePool(spec, 2, 1 << 20) as pool:
        assert not pool.parallel and pool.capacity == 1
    sendable = RecordsSpec("ds", 1, "jsonl", "user_id", 4, LocalSource(tmp_path))
    with route_pool.FilePool(sendable, 2, 1 << 20) as pool:
        assert pool.parallel and pool.capacity == 2 and pool.budget == 1 << 19


def test_a_routing_process_that_died_is_named_with_what_to_do() -> None:
    died: Future[Any] = Future()
    died.set_exception(BrokenProcessPool("gone"))
    with pytest.raises(StateError, match=r"routing f3\.jsonl died .* run again to resume"):
        route_pool.routed_in(died, "f3.jsonl")


def test_routing_processes_fit_the_routing_budget() -> None:
    mib = 1 << 20
    assert route_pool.file_processes(10 * mib, 8, 16, 128 * mib) == 1  # too little to route
    many = route_pool.file_processes(1 << 30, 64, 16, 128 * mib)
    assert 1 <= many <= 64
    # 4,096 shards of 64 KiB at least: 256 MiB a writer, more than the budget holds twice
    assert route_pool.file_processes(1 << 30, 64, 4096, 128 * mib) == 1
    assert route_pool.file_processes(1 << 30, 64, 4096, 1024 * mib) <= 4

"""A records dataset's layout (format, key field, CSV delimiter) is recorded at the destination
(docs/FORMAT.md §5.1): readers key records as the manifests say, whatever the plan says now, and
a plan that changed the layout cannot extend or fold the chains written under the old one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from migrator.codec.manifest import RecordsLayout, ShardManifest, open_manifest
from migrator.errors import TamperedError
from migrator.keys.keyring import load_data_key
from migrator.plan.model import DatasetPlan, load_plan
from migrator.read.chain import chain_layout, csv_header_of
from migrator.repository.names import manifest_key
from migrator.stores.local import LocalStore
from migrator.wiring import open_key_provider
from tests.planfiles import files_below, restored_records, run_cli, write_plan

PEOPLE = """\
  - {{name: people, kind: records, format: jsonl, source: {{kind: local, path: data/people}},
     key: {key}, shards: 2}}
"""
ROWS = """\
  - {{name: rows, kind: records, format: csv, csv_delimiter: "{delimiter}",
     source: {{kind: local, path: data/rows}}, key: code, shards: 2}}
"""
HEADER = b"code;label;n"


def plan(root: Path, *, key: str = "id", delimiter: str = ";") -> None:
    write_plan(root, datasets=PEOPLE.format(key=key) + ROWS.format(delimiter=delimiter))


def person(i: int, version: int) -> bytes:
    # `name` repeats across people: keyed by it, a record would supersede the wrong ones
    return b'{"id": "p%04d", "name": "n%d", "v": %d}' % (i, i % 3, version)


def row(i: int, version: int) -> bytes:
    return b'c%04d;"label; %d";%d' % (i, i, version)


def write_source(root: Path, version: int) -> tuple[Counter[bytes], Counter[bytes]]:
    """Version 1: 60 people and rows; version 2 updates every fifth and deletes every seventh."""
    keep = [i for i in range(60) if version == 1 or i % 7]
    people = [person(i, version if i % 5 == 0 else 1) for i in keep]
    rows = [row(i, version if i % 5 == 0 else 1) for i in keep]
    for folder, name, body in (
        ("people", "p.jsonl", b"".join(r + b"\n" for r in people)),
        ("rows", "r.csv", HEADER + b"\n" + b"".join(r + b"\n" for r in rows)),
    ):
        (root / "data" / folder).mkdir(parents=True, exist_ok=True)
        (root / "data" / folder / name).write_bytes(body)
    return Counter(people), Counter(rows)


@pytest.fixture
def synced(tmp_path: Path) -> tuple[Path, Counter[bytes], Counter[bytes]]:
    """A bulk run and a sync that removes records: chains whose removals need record keys."""
    plan(tmp_path)
    write_source(tmp_path, 1)
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    people, rows = write_source(tmp_path, 2)
    done = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path, people, rows


def test_manifests_record_the_layout(synced: tuple[Path, Counter[bytes], Counter[bytes]]) -> None:
    root = synced[0]
    loaded = load_plan(root / "plan.yaml")
    store = LocalStore(root / "dest" / "t")
    provider = open_key_provider(loaded)
    expected = {"people": RecordsLayout("jsonl", "id"), "rows": RecordsLayout("csv", "code", ";")}
    for dataset, layout in expected.items():
        for generation in (1, 2):
            mkey = manifest_key(dataset, generation, 0)
            manifest = open_manifest(
                store.get(mkey),
                plan=loaded.name,
                dataset=dataset,
                generation=generation,
                shard=0,
                key=load_data_key(store, provider, loaded.name, dataset),
                object_key=mkey,
            )
            assert manifest.records_layout == layout
            assert manifest.extra.get("csv_header") == (
                HEADER.decode() if dataset == "rows" else None
            )


def test_restore_keys_records_as_recorded_not_as_the_plan_says(
    synced: tuple[Path, Counter[bytes], Counter[bytes]],
) -> None:
    root, people, rows = synced
    plan(root, key="name", delimiter=",")  # both would match the wrong removals
    for dataset in ("people", "rows"):
        done = run_cli("restore", "plan.yaml", "--dataset", dataset, "--out", dataset, cwd=root)
        assert done.returncode == 0, done.stderr
    assert restored_records(root / "people") == people
    assert restored_records(root / "rows", csv_header=HEADER) == rows
    assert sorted(files_below(root / "rows")) == ["shard-00000.csv", "shard-00001.csv"]


@pytest.mark.parametrize(
    ("dataset", "change", "field"),
    [("people", {"key": "name"}, "key"), ("rows", {"delimiter": ","}, "csv_delimiter")],
)
@pytest.mark.parametrize("command", ["run", "compact"])
def test_a_changed_layout_cannot_extend_the_chains(
    synced: tuple[Path, Counter[bytes], Counter[bytes]],
    dataset: str,
    change: dict[str, str],
    field: str,
    command: str,
) -> None:
    root = synced[0]
    before = files_below(root / "dest")
    plan(root, **change)
    write_source(root, 3)  # something to sync
    done = run_cli(command, "plan.yaml", "--dataset", dataset, cwd=root)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert f"dataset {dataset}: {field} is" in line and "a new dataset, not a sync" in line
    assert files_below(root / "dest") == before  # nothing written


def chain_of(*layouts: tuple[RecordsLayout | None, str | None]) -> list[ShardManifest]:
    """Manifests of one shard's chain, generations 1, 2, …, as recorded: (layout, csv_header)."""
    return [
        ShardManifest(
            plan="test",
            dataset="rows",
            generation=generation,
            shard=0,
            kind="records",
            chunks=(),
            record_count=0,
            plain_bytes=0,
            stored_bytes=0,
            created_at="2024-01-01T00:00:00+00:00",
            extra={} if header is None else {"csv_header": header},
            records_layout=layout,
        )
        for generation, (layout, header) in enumerate(layouts, start=1)
    ]


def rows_plan(tmp_path: Path) -> DatasetPlan:
    plan(tmp_path)
    loaded = load_plan(tmp_path / "plan.yaml", check_sources=False)
    return next(d for d in loaded.datasets if d.name == "rows")


def test_a_chain_has_one_layout_and_one_header(tmp_path: Path) -> None:
    ds = rows_plan(tmp_path)
    semi, comma = RecordsLayout("csv", "code", ";"), RecordsLayout("csv", "code", ",")
    # version-2 manifests record none: the plan's, then the recorded one wherever there is one
    assert chain_layout(ds, chain_of((None, "a;b"), (None, "a;b"))) == semi
    assert chain_layout(ds, chain_of((None, "a,b"), (comma, "a,b"))) == comma
    with pytest.raises(TamperedError, match="another record layout") as caught:
        chain_layout(ds, chain_of((semi, "a;b"), (None, "a;b"), (comma, "a;b")))
    assert caught.value.object_key == "rows/g000003/s00000/manifest.mgc"
    assert csv_header_of(chain_of((semi, "a;b"), (semi, None))) == "a;b"
    with pytest.raises(TamperedError, match="another CSV header") as caught:
        csv_header_of(chain_of((semi, "a;b"), (semi, "a;c")))
    assert caught.value.object_key == "rows/g000002/s00000/manifest.mgc"

"""A sync reads only the files that changed, and every guarantee holds over many of them:
restore equals the source after each sync with files added, changed, removed, appended to and
renamed (JSONL and CSV), a key held by two files of which one changes is written whole, a sync
of nothing writes no manifest, the cutover gate opens, a rebuilt state store syncs on, and
quarantined records of files left unchanged are still the latest generation's dead letters.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from migrator.cli import main
from migrator.plan.model import load_plan
from migrator.read.cutover import CutoverGate
from migrator.read.restore import Restorer
from migrator.read.verify import Verifier
from migrator.sources.factory import open_source
from migrator.wiring import open_key_provider, open_state, open_store, sqlite_file, state_url
from migrator.write.run import MigrationRun, RunReport
from tests.e2e.changing_source import (
    CSV_HEADER,
    DATASETS,
    CountingSource,
    Files,
    Tally,
    restored,
)
from tests.planfiles import restored_records, write_plan

SHARD_FOLDER = re.compile(r"^[^/]+/g\d{6,}/s\d{5,}/")  # a chunk's or a manifest's key


class Site:
    """One plan, its local destination, and syncs run through the engine with a counted
    source."""

    def __init__(self, root: Path, datasets: str = DATASETS) -> None:
        self.root = root
        self.plan_file = write_plan(root, datasets=datasets)
        self.plan = load_plan(self.plan_file)
        self.store = open_store(self.plan)
        self.provider = open_key_provider(self.plan)
        self.tally = Tally()

    def sync(self) -> RunReport:
        self.tally.clear()
        with open_state(self.plan) as state:
            run = MigrationRun(self.plan, self.store, self.provider, state)
            run.open_source = lambda ds: CountingSource(open_source(ds), ds.name, self.tally)
            return run.run()

    def stored(self) -> set[str]:
        return {o.key for o in self.store.list()}

    def gate(self) -> dict[str, bool]:
        """Each dataset's verdict at the cutover gate, after the integrity checks it requires."""
        with open_state(self.plan) as state:
            Verifier(self.plan, self.store, self.provider, state, sample=0.1, seed=1).verify()
            report = CutoverGate(self.plan, self.store, self.provider, state).check()
        return {d.name: d.ready for d in report.datasets}

    def cli(self, *command: str) -> None:
        """`migrator COMMAND PLAN` in this process; it must succeed."""
        with pytest.raises(SystemExit) as done:
            main([*command, str(self.plan_file)])
        assert done.value.code == 0, command


def changed_shards(report: RunReport) -> dict[str, int]:
    return {d.name: d.shards_changed for d in report.datasets}


def test_syncs_read_only_the_changed_files_and_restore_equals_the_source_after_each(
    tmp_path: Path,
) -> None:
    files = Files(tmp_path, seed=23)
    files.seed(profile_files=6, row_files=4, per_file=25)
    profiles, metadata = files.files["profiles"], files.files["metadata"]
    # One key held by two files: p001 keeps its record, p004's will change, then go.
    profiles["p001.jsonl"].append(b'{"user_id": "dup", "from": "p001"}')
    profiles["p004.jsonl"].append(b'{"user_id": "dup", "from": "p004"}')
    files.write()
    site = Site(tmp_path)
    captured: dict[int, dict[str, Counter[bytes]]] = {}
    generation = 0

    def synced(reads: dict[str, set[str]], when: str) -> RunReport:
        """A sync that must read exactly these files (once each, whole), then restore."""
        nonlocal generation
        report = site.sync()
        generation += 1
        for d in report.datasets:
            assert (d.generation, d.committed) == (generation, True), (when, d)
        for dataset in ("profiles", "metadata"):
            expected = files.sizes(dataset, reads.get(dataset, set()))
            assert site.tally.of(dataset) == expected, f"{dataset} read in {when}"
            out = tmp_path / f"out{generation}"
            assert restored(site.plan, out, dataset) == files.records(dataset), when
        captured[generation] = {ds: files.records(ds) for ds in ("profiles", "metadata")}
        return report

    synced({"profiles": set(profiles), "metadata": set(metadata)}, "the bulk")

    # Edited, appended to, added, removed.
    profiles["p002.jsonl"][3] = files.profile("u002-0003")
    metadata["m001.csv"].append(files.row("v-appended"))
    profiles["p010.jsonl"] = [files.profile(f"u010-{i:04d}") for i in range(7)]
    metadata["m010.csv"] = [files.row(f"v010-{i:04d}") for i in range(5)]
    del profiles["p003.jsonl"], metadata["m002.csv"]
    files.write()
    before = site.stored()
    report = synced(
        {"profiles": {"p002.jsonl", "p010.jsonl"}, "metadata": {"m001.csv", "m010.csv"}},
        "edits, an append, additions and removals",
    )
    assert all(d.removed for d in report.datasets)
    assert {k.split("/")[0] for k in site.stored() - before if SHARD_FOLDER.match(k)} == {
        "profiles",
        "metadata",
    }

    # Renamed: the file is read under its new name; its records did not change.
    files.rename("profiles", "p005.jsonl", "p099.jsonl")
    files.rename("metadata", "m003.csv", "m099.csv")
    files.write()
    report = synced({"profiles": {"p099.jsonl"}, "metadata": {"m099.csv"}}, "renames")
    assert changed_shards(report) == {"profiles": 0, "metadata": 0}

    # The key both p001 and p004 hold changes in p004: p001 is read again for it (rare).
    profiles["p004.jsonl"][-1] = b'{"user_id": "dup", "from": "p004", "edited": true}'
    files.write()
    report = synced({"profiles": {"p004.jsonl", "p001.jsonl"}}, "a duplicated key changed")
    assert changed_shards(report) == {"profiles": 1, "metadata": 0}
    # ... and p004 goes: the key keeps p001's record alone.
    del profiles["p004.jsonl"]
    files.write()
    synced({"profiles": {"p001.jsonl"}}, "a duplicated key's second file removed")
    dup = [r for r in files.records("profiles") if b'"dup"' in r]
    assert dup == [b'{"user_id": "dup", "from": "p001"}']

    # Nothing changed: nothing read, no manifest (no shard touched), the gate open.
    before = site.stored()
    report = synced({}, "no change")
    assert changed_shards(report) == {"profiles": 0, "metadata": 0}
    assert [k for k in site.stored() - before if SHARD_FOLDER.match(k)] == []
    assert site.gate() == {"profiles": True, "metadata": True}

    # Every earlier generation is still restorable as it was captured (before compaction
    # folds them into a new base).
    for gen in (1, 2, 4):
        for dataset in ("profiles", "metadata"):
            out = tmp_path / f"again{gen}" / dataset
            Restorer(site.plan, site.store, site.provider).restore(dataset, out, gen)
            header = CSV_HEADER if dataset == "metadata" else None
            assert restored_records(out, csv_header=header) == captured[gen][dataset]

    # Compacted (a generation without routing of its own), then synced on top.
    site.cli("compact")
    generation += 1
    profiles["p002.jsonl"].append(files.profile("u-after-compaction"))
    files.write()
    assert site.gate() == {"profiles": False, "metadata": True}
    synced({"profiles": {"p002.jsonl"}}, "a sync after compaction")
    assert site.gate() == {"profiles": True, "metadata": True}

    # The state store is lost (the state_dir's routed files stay) and rebuilt from the
    # destination; syncs go on (the first may diff whole), then read only the change again.
    db = sqlite_file(state_url(site.plan))
    for path in db.parent.glob(db.name + "*"):
        path.unlink()
    site.cli("state", "rebuild")
    profiles["p000.jsonl"].append(files.profile("u-after-rebuild"))
    files.write()
    report = site.sync()
    generation += 1
    assert all(d.generation == generation and d.committed for d in report.datasets)
    for dataset in ("profiles", "metadata"):
        assert restored(site.plan, tmp_path / "rebuilt", dataset) == files.records(dataset)
    metadata["m000.csv"][0] = files.row("v000-0000")
    files.write()
    synced({"metadata": {"m000.csv"}}, "a sync after the rebuild's")
    assert site.gate() == {"profiles": True, "metadata": True}


# --- quarantine across syncs ------------------------------------------------------------------

QUARANTINE = """\
  - {name: ds, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 3, on_bad_record: quarantine}
"""


def dead_letters(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["deadletters", str(plan_file), "--dataset", "ds", "--json"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_dead_letters_of_unchanged_files_stay_the_latest_generations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = Files(tmp_path, seed=31)
    files.seed(profile_files=3, row_files=0, per_file=12)
    ds = files.files["profiles"]
    bad_a = b'{"user_id": null, "in": "a"}'
    bad_b = b'{"user_id": "", "in": "b"}'
    bad_c = orjson.dumps({"user_id": None, "n": 1})
    ds["p000.jsonl"].insert(4, bad_a)
    ds["p001.jsonl"].insert(7, bad_b)
    files.write()
    site = Site(tmp_path, QUARANTINE)

    def good() -> Counter[bytes]:
        return Counter(r for r in files.records("profiles") if r not in (bad_a, bad_b, bad_c))

    def check(gen: int, reads: set[str], letters: list[tuple[str, int, bytes]]) -> None:
        report = site.sync()
        (d,) = report.datasets
        assert (d.generation, d.committed) == (gen, True)
        assert site.tally.of("ds") == files.sizes("profiles", reads), f"read in generation {gen}"
        doc = dead_letters(site.plan_file, capsys)
        assert doc["generation"] == gen
        got = [
            (x["file"], x["line"], base64.b64decode(x["data_base64"])) for x in doc["dead_letters"]
        ]
        assert got == letters, f"dead letters of generation {gen}"
        assert doc["records"] == len(letters)
        out = tmp_path / f"out{gen}"
        Restorer(site.plan, site.store, site.provider).restore("ds", out)
        assert restored_records(out) == good()

    check(1, set(ds), [("p000.jsonl", 5, bad_a), ("p001.jsonl", 8, bad_b)])
    # A clean file changes: the bad records of the two unchanged files are still reported.
    ds["p002.jsonl"][0] = files.profile("u002-0000")
    files.write()
    check(2, {"p002.jsonl"}, [("p000.jsonl", 5, bad_a), ("p001.jsonl", 8, bad_b)])
    # One is fixed at its source: only the other is left.
    ds["p001.jsonl"][7] = files.profile("u-fixed")
    files.write()
    check(3, {"p001.jsonl"}, [("p000.jsonl", 5, bad_a)])
    # Nothing changes: the latest generation still holds it.
    check(4, set(), [("p000.jsonl", 5, bad_a)])
    # Its file is renamed: it is read again, and its dead letter names the new name.
    files.rename("profiles", "p000.jsonl", "p050.jsonl")
    files.write()
    check(5, {"p050.jsonl"}, [("p050.jsonl", 5, bad_a)])
    # A new bad file joins, before and after the old one in name order.
    ds["p0001.jsonl"] = [bad_c]
    files.write()
    check(6, {"p0001.jsonl"}, [("p0001.jsonl", 1, bad_c), ("p050.jsonl", 5, bad_a)])
    assert site.gate() == {"ds": True}

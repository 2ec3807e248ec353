"""`kill -9` in the middle of writes into a local destination, then a resumed run: the folder
holds nothing but what the manifests, generation records, keys and ledgers account for, and
the same data objects as a run nobody interrupted.

The kill comes from the crash harness just before a write's rename (`local-publish`), so at
least that write's temporary is on disk, with those of the other upload threads in flight.
"""

from __future__ import annotations

import random
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrator.keys.keyring import load_keyring
from migrator.keys.local import LocalKeyProvider
from migrator.read.chain import head_chain
from migrator.repository.generations import load_record, record_generations
from migrator.repository.segments import list_segments
from migrator.stores.local import META_DIR, LocalStore
from tests.integration.test_crash_matrix import Migrator, Outcome
from tests.planfiles import PROFILES, write_plan, write_profiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATASETS = ("profiles", "videos")
VIDEOS = """\
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 4,
     part_size: 64KiB}
"""
CHUNKS = re.compile(r"^[^/]+/g\d{6,}/s\d{5,}/")  # chunks and manifests of one generation


@pytest.fixture(scope="module")
def migrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrator]:
    server = Migrator(tmp_path_factory.mktemp("commands"))
    try:
        yield server
    finally:
        server.close()


@dataclass
class Place:
    """What Migrator needs of a site: its folder (and no S3 bucket)."""

    root: Path
    s3: None = None

    @property
    def dest(self) -> Path:
        return self.root / "dest" / "t"


def write_videos(folder: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(count):
        size = rng.choice((0, 1, rng.randrange(2, 4000), rng.randrange(4000, 150_000)))
        path = folder / f"{i % 7:02x}" / f"clip-{i:04d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def make_template(root: Path, migrator: Migrator) -> Place:
    """A bulk of a few objects done: the data key and generation 1 exist, so every copy of
    this site seals its sync under the same key and names the same objects."""
    place = Place(root)
    write_profiles(root / "data" / "profiles", 400)
    write_videos(root / "data" / "videos", 5, seed=1)
    write_plan(
        root,
        datasets=VIDEOS + PROFILES,  # the kill comes in the first: both resume one generation
        extra="workers: 2\nupload_concurrency: 8",
    )
    done = migrator(place, "run", "plan.yaml")
    assert done.returncode == 0, done.output[-3000:]
    # The sync to come: many more objects, and records changed.
    shutil.rmtree(root / "data")
    write_profiles(root / "data" / "profiles", 3000, seed=2)
    write_videos(root / "data" / "videos", 260, seed=2)
    return place


def copy_of(template: Place, root: Path) -> Place:
    shutil.copytree(template.root, root, symlinks=True)
    return Place(root)


def accounted_for(place: Place) -> dict[str, set[str]]:
    """Every file under the destination, sorted by what accounts for it; anything that no
    manifest, generation record, keyring or ledger accounts for fails the test, naming it."""
    store = LocalStore(place.dest)
    provider = LocalKeyProvider(place.root / "kek.key")
    named: dict[str, set[str]] = defaultdict(set)
    for ds in DATASETS:
        keyring = load_keyring(store, provider, "test", ds)
        gens = record_generations(store, ds)
        for g in gens:
            record = load_record(store, "test", ds, g, keyring)[0]
            named["generation"].add(f"{ds}/_generations/g{g:06d}.mgc")
            for head in record.shards:
                for link in head_chain(store, "test", ds, head, keyring):
                    named["manifest"].add(link.object_key)
                    named["chunk"] |= {c.object_key for c in link.manifest.chunks}
        segments, strays = list_segments(store, ds)
        assert strays == [], f"{ds}: not ledger segments: {strays}"
        for shard, numbered in segments.items():
            numbers = [n for n, _ in numbered]
            assert numbers == list(range(1, len(numbers) + 1)), f"{ds} s{shard}: {numbers}"
            named["ledger"] |= {k for _, k in numbered}
    files = {p.relative_to(place.dest).as_posix() for p in place.dest.rglob("*") if p.is_file()}
    objects = {f for f in files if not f.startswith(f"{META_DIR}/")}
    sidecars = files - objects
    keys = {f for f in objects if re.fullmatch(r"[^/]+/_keys/[^/]+", f)}
    named["key"] = keys
    known = set().union(*named.values())
    assert sorted(objects - known) == [], "files nothing accounts for"
    assert sorted(f"{META_DIR}/{o}.json" for o in objects) == sorted(sidecars), "sidecars"
    return named


def test_a_killed_run_into_a_local_folder_leaves_nothing_behind_once_resumed(
    tmp_path: Path, migrator: Migrator
) -> None:
    template = make_template(tmp_path / "template", migrator)
    whole = copy_of(template, tmp_path / "uninterrupted")
    done = migrator(whole, "run", "plan.yaml")
    assert done.returncode == 0, done.output[-3000:]

    killed = copy_of(template, tmp_path / "killed")
    crash = {"point": "local-publish:before", "hit": 120, "dataset": "videos"}
    outcome: Outcome = migrator(killed, "run", "plan.yaml", crash=crash)
    outcome.killed_at("local-publish:before")
    left = sorted(p.name for p in killed.dest.rglob("*.tmp"))
    assert left, "the kill left no temporary file: the test would prove nothing"

    resumed = migrator(killed, "run", "plan.yaml")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert sorted(killed.dest.rglob("*.tmp")) == []
    got, want = accounted_for(killed), accounted_for(whole)
    for kind in ("chunk", "manifest", "generation", "key"):
        assert got[kind] == want[kind], f"{kind}s differ from an uninterrupted run's"
    audit = migrator(killed, "audit", "plan.yaml")
    assert audit.returncode == 0, audit.output[-3000:]

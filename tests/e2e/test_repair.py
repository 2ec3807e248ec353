"""`migrator repair`: damaged and missing chunks re-sent from the source under their identity.

A site is migrated (bulk, then a sync, so chains have deltas), then stored objects are damaged:
a byte flipped in a records chunk and in an object part, a chunk deleted. Verify names them;
repair re-seals them from the source; a full verify and a full audit pass afterwards and the
restore equals the source. A chunk whose source changed is refused, with the reason, and the
shard is left as it was; a repair cut short is finished by the next.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import migrator
from migrator.codec.manifest import ChunkRef, ShardManifest
from migrator.errors import StoreError, UsageError
from migrator.keys.keyring import load_keyring
from migrator.maintain.repair import RepairReport, repair
from migrator.read.audit import Auditor
from migrator.read.chain import head_chain
from migrator.repository.generations import latest_record
from migrator.stores.base import Buffer
from migrator.stores.memory import MemoryStore
from tests.e2e.test_sync_generations import LiveSource, Site, assert_same


def migrated(tmp_path: Path) -> tuple[LiveSource, Site]:
    """A bulk, then a sync that appended profiles (so each shard's chain is a base and a
    delta, and the base's records stay in the source in their order) and added videos."""
    live = LiveSource(tmp_path, random.Random(7))
    live.seed(profiles=600, rows=200, videos=8)
    live.write()
    site = Site(tmp_path)
    site.run()
    for n in range(60):
        uid = f"u9{n:05d}"  # sorts after every earlier key: appended to the files
        live.profiles[uid] = live.profile(uid)
    live.add_video()
    live.write()
    site.run()
    return live, site


def chain_of(site: Site, dataset: str, shard: int) -> list[ShardManifest]:
    keyring = load_keyring(site.store, site.provider, site.plan.name, dataset)
    record = latest_record(site.store, site.plan.name, dataset, keyring)
    assert record is not None
    links = head_chain(site.store, site.plan.name, dataset, record.shards[shard], keyring)
    return [link.manifest for link in links]


def pick(
    site: Site, dataset: str, *, base: bool = True, shards: range = range(3)
) -> tuple[int, ChunkRef]:
    """A chunk of a shard's base (or of a delta) that lists chunks."""
    for shard in shards:
        for m in chain_of(site, dataset, shard):
            if m.is_base == base and m.chunks:
                return shard, m.chunks[len(m.chunks) // 2]
    raise AssertionError(f"no {'base' if base else 'delta'} chunk in {dataset}")


def flip(store: MemoryStore, key: str, at: int = 300) -> None:
    data = bytearray(store.get(key))
    data[min(at, len(data) - 20)] ^= 0x40
    info = store.head(key)
    assert info is not None
    store.put(key, bytes(data), dict(info.metadata))


def problems(site: Site, dataset: str) -> set[str]:
    with site.state() as state:
        conn = migrator.Connection(site.plan, site.store, site.provider, state)
        report = migrator.verify(conn, [dataset], sample=1.0)
    return {p.object_key or "" for p in report.problems}


def run_repair(site: Site, dataset: str, **kwargs: object) -> RepairReport:
    with site.state() as state:
        conn = migrator.Connection(site.plan, site.store, site.provider, state)
        return repair(conn, dataset, **kwargs)  # type: ignore[arg-type]


def audit_ok(site: Site) -> None:
    with site.state() as state:
        report = Auditor(
            site.plan, site.store, provider=site.provider, state=state, full=True
        ).audit()
    found = [(f.kind, f.object_key) for d in report.datasets for _, f in d.all_findings()]
    assert found == []


def test_damaged_and_missing_chunks_are_repaired_and_everything_checks_out(
    tmp_path: Path,
) -> None:
    live, site = migrated(tmp_path)
    # A base chunk below a delta: its manifest, the delta's and the records are sealed again.
    shard, profile_chunk = pick(site, "profiles", shards=range(3, 4))
    assert len(chain_of(site, "profiles", shard)) == 2
    _, delta_chunk = pick(site, "profiles", base=False, shards=range(shard))
    _, meta_chunk = pick(site, "metadata")
    _, video_part = pick(site, "videos")
    flip(site.store, profile_chunk.object_key)
    flip(site.store, delta_chunk.object_key)
    site.store.delete(meta_chunk.object_key)
    flip(site.store, video_part.object_key, at=200)

    assert profile_chunk.object_key in problems(site, "profiles")
    assert delta_chunk.object_key in problems(site, "profiles")
    assert meta_chunk.object_key in problems(site, "metadata")
    assert video_part.object_key in problems(site, "videos")

    dry = run_repair(site, "profiles", dry_run=True)
    assert {r.object_key for r in dry.repaired} == {
        profile_chunk.object_key,
        delta_chunk.object_key,
    }
    assert dry.verify is None
    assert profile_chunk.object_key in problems(site, "profiles")  # a dry run stores nothing

    for dataset in ("profiles", "metadata", "videos"):
        report = run_repair(site, dataset)
        assert report.ok, report.lines()
        assert report.repaired
        assert report.verify is not None and report.verify.ok
    site.verify_ok()
    audit_ok(site)
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "repair")
    # Nothing left to repair: a rerun reads back and changes nothing.
    again = run_repair(site, "profiles")
    assert again.ok and not again.repaired and again.chunks_checked > 0
    # A sync after a repair chains onto the repaired manifests.
    live.mutate()
    live.write()
    site.run()
    site.verify_ok()
    audit_ok(site)
    assert_same(site.restore(tmp_path / "out2"), live.snapshot(), "sync after repair")


def test_a_chunk_whose_source_changed_is_refused_and_the_shard_left_as_it_was(
    tmp_path: Path,
) -> None:
    live, site = migrated(tmp_path)
    _, part = pick(site, "videos")
    flip(site.store, part.object_key, at=200)
    assert part.name is not None
    live.videos[part.name] = live.videos[part.name] + b"changed"
    live.write()
    before = {o.key: site.store.get(o.key) for o in site.store.list()}

    report = run_repair(site, "videos")
    assert not report.ok and not report.repaired
    [line] = [x for x in report.lines() if "not repaired" in x]
    assert part.object_key in line and "changed since generation" in line
    assert {o.key: site.store.get(o.key) for o in site.store.list()} == before

    _, chunk = pick(site, "profiles")
    flip(site.store, chunk.object_key)
    for uid in list(live.profiles):
        live.profiles[uid] = live.profile(uid)  # every record edited
    live.write()
    report = run_repair(site, "profiles")
    assert not report.ok
    assert any(chunk.object_key in x and "source changed" in x for x in report.lines())


class FailingPuts(MemoryStore):
    allow = 10**9

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if self.allow <= 0:
            raise StoreError(f"{key}: put failed (injected failure)")
        self.allow -= 1
        super().put(key, data, metadata)


@pytest.mark.parametrize("fail_after", [0, 1, 3])
def test_a_repair_cut_short_is_finished_by_the_next(tmp_path: Path, fail_after: int) -> None:
    live, site = migrated(tmp_path)
    store = FailingPuts()
    for info in site.store.list():
        store.put(info.key, site.store.get(info.key), dict(info.metadata))
    site.store = store
    _, chunk = pick(site, "profiles")
    flip(store, chunk.object_key)
    store.allow = fail_after
    with pytest.raises(StoreError):
        run_repair(site, "profiles")
    store.allow = 10**9
    # Until the repair is finished, no sync builds on the half-stored chain: it would link to
    # manifests no longer stored.
    migrated_as = live.snapshot()
    uid = sorted(live.profiles)[-1]
    live.profiles[uid] = live.profile(uid)
    live.write()
    with pytest.raises(UsageError, match="repair of shard"):
        site.run()
    report = run_repair(site, "profiles")
    assert report.ok, report.lines()
    site.verify_ok()
    audit_ok(site)
    assert_same(site.restore(tmp_path / "out"), migrated_as, "resumed repair")
    site.run()  # the repair finished: syncing goes on
    site.verify_ok()
    assert_same(site.restore(tmp_path / "out2"), live.snapshot(), "a sync after the repair")


def test_the_repair_command_fixes_what_verify_names_and_says_what_it_cannot(
    tmp_path: Path,
) -> None:
    from tests.planfiles import PROFILES, VIDEOS, run_cli, write_objects, write_plan, write_profiles

    write_profiles(tmp_path / "data/profiles", 3000)
    videos = write_objects(tmp_path / "data/videos", [0, 1000, 150_000, 70_000])
    write_plan(tmp_path, datasets=PROFILES + VIDEOS)
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    dest = tmp_path / "dest/t"
    chunk = sorted((dest / "profiles/g000001/s00001/r").glob("*.mgc"))[-1]
    part = next(p for p in sorted((dest / "videos").rglob("*.mgc")) if "/o/" in p.as_posix())
    data = bytearray(chunk.read_bytes())
    data[400] ^= 1
    chunk.write_bytes(bytes(data))
    part.unlink()
    verified = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert verified.returncode != 0
    assert chunk.relative_to(dest).as_posix() in verified.stdout + verified.stderr

    dry = run_cli("repair", "plan.yaml", "--dataset", "profiles", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would repair" in dry.stdout and "nothing stored" in dry.stdout
    fixed = run_cli("repair", "plan.yaml", "--dataset", "profiles", "--shards", "1", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"{chunk.relative_to(dest).as_posix()} repaired" in fixed.stdout
    assert "passes" in fixed.stdout

    # The part's object was edited since: refused, one line naming the part, exit 1.
    for n in videos:
        (tmp_path / "data/videos" / n).write_bytes(videos[n] + b"edited")
    refused = run_cli("repair", "plan.yaml", "--dataset", "videos", cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    [line] = [x for x in refused.stdout.splitlines() if "not repaired" in x]
    assert part.relative_to(dest).as_posix() in line and "changed since generation 1" in line
    # What the refusal says to do for an object: a sync stores the object as it is now, and a
    # compaction folds the chain, reading only live parts: the lost part goes with the fold.
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 1
    compacted = run_cli("compact", "plan.yaml", "--dataset", "videos", cwd=tmp_path)
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    assert run_cli("verify", "plan.yaml", cwd=tmp_path).returncode == 0
    audited = run_cli("audit", "plan.yaml", "--full", cwd=tmp_path)
    assert audited.returncode == 0, audited.stdout + audited.stderr

"""Compaction folds chains into bases, keeps restore equal to the source, and deletes old
generations only after the new bases verify; a crash at any point is finished by a rerun."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from migrator.errors import StoreError, UsageError
from migrator.maintain.compact import CompactionError, Compactor
from migrator.read.cutover import CutoverGate
from migrator.stores.base import Buffer
from migrator.stores.memory import MemoryStore
from tests.e2e.test_sync_generations import DATASETS, LiveSource, Site, assert_same
from tests.planfiles import run_cli, write_plan


def synced_site(tmp_path: Path, syncs: int = 3) -> tuple[LiveSource, Site]:
    live = LiveSource(tmp_path, random.Random(23))
    live.seed(profiles=300, rows=200, videos=9)
    live.write()
    site = Site(tmp_path)
    site.run()
    for _ in range(syncs):
        live.mutate()
        live.write()
        site.run()
    return live, site


def chains(site: Site) -> dict[str, list[tuple[int, ...]]]:
    from migrator.keys.keyring import load_data_key
    from migrator.read.chain import latest_record

    out = {}
    for ds in site.plan.datasets:
        key = load_data_key(site.store, site.provider, site.plan.name, ds.name)
        record = latest_record(site.store, site.plan.name, ds.name, key)
        assert record is not None
        out[ds.name] = [h.chain for h in record.shards]
    return out


def compact(site: Site) -> list[object]:
    with site.state() as state:
        return list(Compactor(site.plan, site.store, site.provider, state).compact())


def test_compaction_folds_chains_and_restore_stays_equal_to_the_source(tmp_path: Path) -> None:
    live, site = synced_site(tmp_path)
    before = chains(site)
    assert any(len(c) > 1 for cs in before.values() for c in cs)
    stored_before = {o.key for o in site.store.list()}

    results = compact(site)
    after = chains(site)
    for name, per_shard in after.items():
        assert all(len(c) == 1 for c in per_shard), (name, per_shard)
    # the new bases are generation 5 (bulk 1, syncs 2-4); untouched shards keep theirs
    assert {c[0] for cs in after.values() for c in cs} <= {1, 5}
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "compaction")
    site.verify_ok()
    # Old generations are gone; only the latest record is left.
    keys = {o.key for o in site.store.list()}
    for name, per_shard in before.items():
        for shard, chain in enumerate(per_shard):
            if len(chain) > 1:
                for g in chain:
                    assert not any(k.startswith(f"{name}/g{g:06d}/s{shard:05d}/") for k in keys)
        assert sorted(k for k in keys if k.startswith(f"{name}/_generations/")) == [
            f"{name}/_generations/g000005.mgc"
        ]
    assert len(keys) < len(stored_before)
    assert all(r.records_deleted == 4 for r in results)  # type: ignore[attr-defined]

    # Syncing goes on from the new bases; the gate still matches.
    live.mutate()
    live.write()
    site.run()
    assert_same(site.restore(tmp_path / "out2"), live.snapshot(), "sync after compaction")
    site.verify_ok()  # the gate requires each compared head checked
    with site.state() as state:
        assert CutoverGate(site.plan, site.store, site.provider, state).check().ready
    # A second compaction right away folds only what the last sync touched.
    compact(site)
    assert_same(site.restore(tmp_path / "out3"), live.snapshot(), "second compaction")
    site.verify_ok()


class FailingDeletes(MemoryStore):
    """Stops the sweep part way: the first delete after `allow` succeeds raises."""

    allow = 10**9

    def delete(self, key: str) -> None:
        if self.allow <= 0:
            raise StoreError(f"{key}: delete failed (injected failure)")
        self.allow -= 1
        super().delete(key)


class FailingPuts(MemoryStore):
    allow = 10**9

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if self.allow <= 0:
            raise StoreError(f"{key}: put failed (injected failure)")
        self.allow -= 1
        super().put(key, data, metadata)


@pytest.mark.parametrize("fail_after", [0, 3, 12])
def test_an_interrupted_compaction_writing_is_resumed_by_a_rerun(
    tmp_path: Path, fail_after: int
) -> None:
    live, site = synced_site(tmp_path, syncs=2)
    store = FailingPuts()
    for info in site.store.list():
        store.put(info.key, site.store.get(info.key), dict(info.metadata))
    site.store = store
    store.allow = fail_after
    with pytest.raises(StoreError, match="injected"):
        compact(site)
    # Until the compaction's record exists, restore reads the old chains.
    assert_same(site.restore(tmp_path / "mid"), live.snapshot(), "interrupted compaction")
    store.allow = 10**9
    with site.state() as state:
        interrupted = [
            ds.name
            for ds in site.plan.datasets
            if (g := state.latest_generation(ds.name)) and g.kind == "compact" and not g.committed
        ]
    assert interrupted
    with pytest.raises(UsageError, match="migrator compact"):  # no sync over an open compaction
        site.run()
    compact(site)
    assert all(len(c) == 1 for cs in chains(site).values() for c in cs)
    assert_same(site.restore(tmp_path / "out"), live.snapshot(), "resumed compaction")
    site.verify_ok()


def test_an_interrupted_sweep_is_finished_by_a_rerun(tmp_path: Path) -> None:
    live, site = synced_site(tmp_path, syncs=2)
    store = FailingDeletes()
    for info in site.store.list():
        store.put(info.key, site.store.get(info.key), dict(info.metadata))
    site.store = store
    store.allow = 5
    with pytest.raises(StoreError, match="injected"):
        compact(site)
    assert_same(site.restore(tmp_path / "mid"), live.snapshot(), "interrupted sweep")
    store.allow = 10**9
    (again,) = [r for r in compact(site) if r.name == "profiles"]  # type: ignore[attr-defined]
    assert again.generation is None and again.objects_deleted > 0  # type: ignore[attr-defined]
    site.verify_ok()
    keys = [o.key for o in store.list()]
    assert len([k for k in keys if "/_generations/" in k]) == 3  # one per dataset


def test_old_generations_are_kept_when_the_new_bases_do_not_verify(tmp_path: Path) -> None:
    _live, site = synced_site(tmp_path, syncs=1)
    with site.state() as state:
        compactor = Compactor(site.plan, site.store, site.provider, state)
        sweep = compactor._sweep
        seen: list[str] = []

        def tamper_then_sweep(*args: object) -> None:
            ds = args[0]
            name = ds.name  # type: ignore[attr-defined]
            if not seen:
                seen.append(name)
                victim = next(
                    o.key for o in site.store.list(f"{name}/g000003/") if "manifest" not in o.key
                )
                data = bytearray(site.store.get(victim))
                data[-1] ^= 1
                site.store.put(victim, bytes(data))
            sweep(*args)  # type: ignore[arg-type]

        compactor._sweep = tamper_then_sweep  # type: ignore[method-assign]
        with pytest.raises(CompactionError, match="do not verify"):
            compactor.compact()
    # Nothing old was deleted: the previous generation's objects are all still there.
    assert any(o.key.startswith(f"{seen[0]}/g000001/") for o in site.store.list())
    assert any(o.key.startswith(f"{seen[0]}/_generations/g000002") for o in site.store.list())


def test_compact_through_the_cli(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(29))
    live.seed(profiles=200, rows=100, videos=6)
    live.write()
    write_plan(tmp_path, datasets=DATASETS)
    for _ in range(2):
        done = run_cli("run", "plan.yaml", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        live.mutate()
        live.write()
    out = run_cli("compact", "plan.yaml", "--dataset", "profiles", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("compacted profiles: generation 3: ")
    assert "metadata" not in out.stdout
    again = run_cli("compact", "plan.yaml", "--dataset", "profiles", cwd=tmp_path)
    assert "nothing to fold" in again.stdout
    verified = run_cli("verify", "plan.yaml", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout
    restored = run_cli(
        "restore", "plan.yaml", "--dataset", "profiles", "--out", "out", cwd=tmp_path
    )
    assert restored.returncode == 0, restored.stderr
    # restored as of the last sync (the source changed once more since)
    assert "(generation 3)" in restored.stdout

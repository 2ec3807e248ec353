"""Key rotation: `migrator keys rotate` re-wraps every data key under the plan's new KEK without
re-encrypting anything; a new data key seals later generations; every generation stays
verifiable and restorable, through crashes at any point of a rotation."""

from __future__ import annotations

import base64
import random
import re
from pathlib import Path

import orjson
import pytest

from migrator.codec.chunk import read_header
from migrator.errors import PlanError, StoreError, UntrustedKeyError, WrongKeyError
from migrator.keys.kekchain import KekChain
from migrator.keys.keyring import load_keyring
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.maintain.compact import Compactor
from migrator.maintain.rotate import DatasetRotation, KeyRotation
from migrator.plan.model import load_plan
from migrator.read.cutover import CutoverGate
from migrator.repository.keyrings import read_keyring
from migrator.stores.base import Buffer, ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.memory import MemoryStore
from tests.e2e.test_secrets_hygiene import assert_clean
from tests.e2e.test_sync_generations import DATASETS, LiveSource, Site, Snapshot, assert_same
from tests.planfiles import run_cli, write_plan

NAMES = ("profiles", "metadata", "videos")


class FlakyStore(MemoryStore):
    """Puts or deletes fail once their allowance is used up: a crash at that point."""

    puts_left = 10**9
    deletes_left = 10**9

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        if self.puts_left <= 0:
            raise StoreError(f"{key}: put failed (injected crash)")
        self.puts_left -= 1
        super().put(key, data, metadata)

    def delete(self, key: str) -> None:
        if self.deletes_left <= 0:
            raise StoreError(f"{key}: delete failed (injected crash)")
        self.deletes_left -= 1
        super().delete(key)


def migrated(
    tmp_path: Path, syncs: int = 1, provider: KeyProvider | None = None
) -> tuple[LiveSource, Site, dict[int, Snapshot]]:
    """A bulk copy and `syncs` syncs under the plan's first KEK (or `provider`); what each
    generation captured."""
    live = LiveSource(tmp_path, random.Random(31))
    live.seed(profiles=240, rows=150, videos=8)
    live.write()
    site = Site(tmp_path)
    site.store = FlakyStore()
    if provider is not None:
        use_keys(site, provider)
    captured = {}
    for gen in range(1, syncs + 2):
        if gen > 1:
            live.mutate()
            live.write()
        captured[gen] = live.snapshot()
        site.run()
    return live, site, captured


def new_kek(tmp_path: Path, name: str = "kek2.key") -> LocalKeyProvider:
    init_kek_file(tmp_path / name)
    return LocalKeyProvider(tmp_path / name)


def rotate(
    site: Site, provider: KeyProvider, *, new_data_key: bool = False
) -> list[DatasetRotation]:
    return KeyRotation(site.plan, site.store, provider).rotate(new_data_key=new_data_key)


def use_keys(site: Site, provider: KeyProvider) -> None:
    """What the plan's keys now name: the site reads (and writes) with them from here on."""
    site.provider = provider  # type: ignore[assignment]  # Site types it as its first KEK


def data_objects(site: Site) -> dict[str, bytes]:
    return {o.key: site.store.get(o.key) for o in site.store.list() if "/_keys/" not in o.key}


def key_objects(site: Site, name: str) -> list[str]:
    return [o.key for o in site.store.list(f"{name}/_keys/")]


def sealed_with(site: Site, prefix: str) -> set[str]:
    """Key ids in the headers of every chunk under prefix."""
    return {read_header(site.store.get(o.key)).key_id.hex() for o in site.store.list(prefix)}


def restores_every_generation(site: Site, captured: dict[int, Snapshot], out: Path) -> None:
    for gen, snapshot in captured.items():
        assert_same(site.restore(out / f"g{gen}", gen), snapshot, f"generation {gen}")


def test_a_kek_rotation_rewraps_data_keys_and_keeps_every_generation_readable(
    tmp_path: Path,
) -> None:
    live, site, captured = migrated(tmp_path)
    old = site.provider
    new = new_kek(tmp_path)
    before = data_objects(site)
    keys_before = {n: load_keyring(site.store, old, site.plan.name, n).key_ids for n in NAMES}

    # The plan names the new KEK and the old one as previous: everything reads before rotating.
    use_keys(site, KekChain(new, [old]))
    site.verify_ok()
    results = rotate(site, site.provider)
    assert [(r.dataset, r.rewrapped, r.keys, r.revision) for r in results] == [
        (n, 1, 1, 1) for n in NAMES
    ]
    for r in results:
        assert r.written == f"{r.dataset}/_keys/keyring-000001.json"
        assert r.removed == [f"{r.dataset}/_keys/datakey.json"]
        assert key_objects(site, r.dataset) == [r.written]
    # Nothing was re-encrypted: every chunk, manifest and record is byte for byte the same.
    assert data_objects(site) == before

    # The old KEK retired: the new one alone reads every generation.
    use_keys(site, new)
    site.verify_ok()
    restores_every_generation(site, captured, tmp_path / "after")
    for name in NAMES:
        assert load_keyring(site.store, new, site.plan.name, name).key_ids == keys_before[name]
        # The old KEK alone can no longer open the rotated keyring.
        with pytest.raises(WrongKeyError, match=f"dataset {name}: no KEK of the plan") as err:
            load_keyring(site.store, old, site.plan.name, name)
        assert err.value.object_key == f"{name}/_keys/keyring-000001.json"
        assert "keys.previous" in str(err.value)

    # A rerun changes nothing, with or without the old KEK still listed.
    for provider in (KekChain(new, [old]), new):
        puts, deletes = site.store.requests["put"], site.store.requests["delete"]
        again = rotate(site, provider)
        assert [(r.rewrapped, r.written, r.removed, r.changed) for r in again] == [
            (0, None, [], False)
        ] * len(NAMES)
        assert (site.store.requests["put"], site.store.requests["delete"]) == (puts, deletes)

    # Syncing goes on under the new KEK.
    live.mutate()
    live.write()
    site.run()
    assert_same(site.restore(tmp_path / "sync"), live.snapshot(), "a sync after the rotation")


def test_a_new_data_key_seals_later_generations_and_old_ones_stay_readable(
    tmp_path: Path,
) -> None:
    live, site, captured = migrated(tmp_path)
    first = {n: load_keyring(site.store, site.provider, site.plan.name, n).current for n in NAMES}
    results = rotate(site, site.provider, new_data_key=True)
    fresh = {r.dataset: r.new_key for r in results}
    for r in results:
        assert (r.rewrapped, r.keys, r.revision) == (0, 2, 1)
        assert r.new_key is not None and r.current == r.new_key
        assert r.new_key != first[r.dataset].key_id.hex()

    live.mutate()
    live.write()
    captured[3] = live.snapshot()
    report = site.run()
    assert all(d.generation == 3 and d.committed for d in report.datasets)
    for name in NAMES:
        old_id = first[name].key_id.hex()
        assert sealed_with(site, f"{name}/g000001/") == {old_id}
        assert sealed_with(site, f"{name}/g000002/") <= {old_id}
        assert sealed_with(site, f"{name}/g000003/") == {fresh[name]}
        assert sealed_with(site, f"{name}/_generations/g000003") == {fresh[name]}
    site.verify_ok()
    restores_every_generation(site, captured, tmp_path / "before-compaction")
    with site.state() as state:
        assert CutoverGate(site.plan, site.store, site.provider, state).check().ready

    # Compaction re-seals the live content of folded shards under the current key.
    with site.state() as state:
        compacted = Compactor(site.plan, site.store, site.provider, state).compact()
    for c in compacted:
        assert c.generation == 4 and c.shards_compacted
        assert sealed_with(site, f"{c.name}/g000004/") == {fresh[c.name]}
    site.verify_ok()
    assert_same(site.restore(tmp_path / "compacted"), captured[3], "compaction")
    live.mutate()
    live.write()
    site.run()
    site.verify_ok()
    assert_same(site.restore(tmp_path / "after"), live.snapshot(), "a sync after compaction")


def test_a_generation_under_way_finishes_under_the_key_it_began_with(tmp_path: Path) -> None:
    live, site, captured = migrated(tmp_path)
    assert isinstance(site.store, FlakyStore)
    live.mutate()
    live.write()
    captured[3] = live.snapshot()
    site.store.puts_left = 6  # the sync stops part way through generation 3
    with pytest.raises(StoreError, match="injected"):
        site.run()
    site.store.puts_left = 10**9
    first = {n: load_keyring(site.store, site.provider, site.plan.name, n).current for n in NAMES}
    results = rotate(site, site.provider, new_data_key=True)
    under_way = [r for r in results if r.open_generation is not None]
    assert under_way
    for r in under_way:
        assert r.open_generation == 3
        assert r.open_generation_key == first[r.dataset].key_id.hex() != r.current

    site.run()  # resumes generation 3 under the key it began with, in every shard
    for r in results:
        began = r.open_generation_key if r in under_way else r.new_key
        assert sealed_with(site, f"{r.dataset}/g000003/") == {began}
    site.verify_ok()
    restores_every_generation(site, captured, tmp_path / "resumed")
    live.mutate()
    live.write()
    site.run()  # the next generation is sealed under the new key
    for r in results:
        assert sealed_with(site, f"{r.dataset}/g000004/") == {r.new_key}
    site.verify_ok()
    assert_same(site.restore(tmp_path / "next"), live.snapshot(), "the next sync")


@pytest.mark.parametrize(
    ("puts", "deletes"),
    [(0, 10**9), (1, 10**9), (2, 10**9), (10**9, 0), (10**9, 1), (10**9, 2)],
    ids=["put-1", "put-2", "put-3", "delete-1", "delete-2", "delete-3"],
)
@pytest.mark.parametrize("new_data_key", [False, True], ids=["kek", "kek+data-key"])
def test_an_interrupted_rotation_leaves_everything_readable_and_a_rerun_finishes_it(
    tmp_path: Path, puts: int, deletes: int, new_data_key: bool
) -> None:
    _, site, captured = migrated(tmp_path)
    assert isinstance(site.store, FlakyStore)
    old, new = site.provider, new_kek(tmp_path)
    chain = KekChain(new, [old])
    site.store.puts_left, site.store.deletes_left = puts, deletes
    with pytest.raises(StoreError, match="injected crash"):
        rotate(site, chain, new_data_key=new_data_key)
    site.store.puts_left = site.store.deletes_left = 10**9

    # Mid-rotation, the plan (new KEK, old one previous) reads every generation.
    use_keys(site, chain)
    site.verify_ok()
    restores_every_generation(site, captured, tmp_path / "mid")

    rotate(site, chain, new_data_key=new_data_key)  # the rerun finishes it
    use_keys(site, new)
    site.verify_ok()
    restores_every_generation(site, captured, tmp_path / "done")
    for name in NAMES:
        assert [k.rsplit("/", 1)[1] for k in key_objects(site, name)] == ["keyring-000001.json"]
        stored = read_keyring(site.store, site.plan.name, name)
        # One new data key per dataset, however many times the command was run.
        assert len(stored.keys) == (2 if new_data_key else 1)
        assert {w.kek_id for w in stored.keys} == {new.kek_id}
    assert not any(r.changed for r in rotate(site, new))


def test_a_kek_that_cannot_unwrap_is_named_with_the_dataset_and_key_object(
    tmp_path: Path,
) -> None:
    _, site, _ = migrated(tmp_path, syncs=0)
    stranger = new_kek(tmp_path)
    with pytest.raises(WrongKeyError) as err:
        rotate(site, stranger)
    message = str(err.value)
    assert err.value.object_key == "profiles/_keys/datakey.json"
    assert message.startswith("profiles/_keys/datakey.json: dataset profiles: no KEK of the plan")
    assert f"KEK id {stranger.kek_id}" in message and "keys.previous" in message
    assert not any(r.changed for r in rotate(site, site.provider))  # nothing was written


def test_a_keyring_whose_current_key_was_swapped_is_refused(tmp_path: Path) -> None:
    _, site, _ = migrated(tmp_path, syncs=0)
    rotate(site, site.provider, new_data_key=True)
    okey = "videos/_keys/keyring-000001.json"
    doc = orjson.loads(site.store.get(okey))
    first = doc["keys"][0]["key_id"]
    doc["sealing"][-1]["key_id"] = first  # back to the first key, without the signing key
    site.store.put(okey, orjson.dumps(doc))
    with pytest.raises(UntrustedKeyError, match="does not verify with signing key") as err:
        load_keyring(site.store, site.provider, site.plan.name, "videos")
    assert err.value.object_key == okey and err.value.key_id == first


def test_the_plan_names_earlier_keks_in_keys_previous(tmp_path: Path) -> None:
    write_plan(tmp_path, datasets=DATASETS)
    plan_file = tmp_path / "plan.yaml"
    text = plan_file.read_text()

    def keys(value: str) -> None:
        plan_file.write_text(text.replace("keys: {provider: local, kek_file: kek.key}", value))

    keys(
        "keys: {provider: local, kek_file: kek2.key,"
        " previous: [{provider: local, kek_file: kek.key}]}"
    )
    plan = load_plan(plan_file, check_sources=False)
    assert [k.kek_file for k in plan.keys.previous] == [tmp_path / "kek.key"]
    for value, error in [
        (
            "{provider: local, kek_file: kek.key,"
            " previous: [{provider: local, kek_file: ./kek.key}]}",
            "keys.previous[0]: names the same KEK as keys",
        ),
        (
            "{provider: local, kek_file: kek2.key, previous: [{provider: aws-kms}]}",
            "keys.previous[0].key_id: required when provider is 'aws-kms'",
        ),
        (
            "{provider: local, kek_file: kek2.key, previous: [{provider: local, kek_file: a,"
            " previous: []}]}",
            "keys.previous[0].previous: unknown field 'previous'",
        ),
    ]:
        keys(f"keys: {value}")
        with pytest.raises(PlanError, match=re.escape(error)):
            load_plan(plan_file, check_sources=False)


def test_keys_rotate_on_the_command_line(tmp_path: Path) -> None:
    live = LiveSource(tmp_path, random.Random(33))
    live.seed(profiles=120, rows=60, videos=4)
    live.write()
    write_plan(tmp_path, datasets=DATASETS)
    plan_file = tmp_path / "plan.yaml"
    original = plan_file.read_text()
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    old_kek = LocalKeyProvider(tmp_path / "kek.key")
    new_kek(tmp_path)
    rotated = original.replace(
        "keys: {provider: local, kek_file: kek.key}",
        "keys: {provider: local, kek_file: kek2.key,\n"
        "       previous: [{provider: local, kek_file: kek.key}]}",
    )
    plan_file.write_text(rotated)

    done = run_cli("keys", "rotate", "plan.yaml", "--new-data-key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The new KEK's signing key (beside it) signs the rotated keyrings.
    signing_key = LocalKeyProvider(tmp_path / "kek2.key").signer.public_key().key_id
    shown = done.stdout + done.stderr
    for name in NAMES:
        assert re.search(
            rf"^{name}: re-wrapped 1 of 2 data key\(s\) under local KEK \S+kek2\.key .*added"
            r" data key [0-9a-f]{32}, now current \(it seals generation 2 on\); signed by"
            rf" signing key {signing_key}; wrote {name}/_keys/keyring-000001\.json;"
            r" removed 1 superseded key object\(s\)$",
            done.stdout,
            re.MULTILINE,
        ), done.stdout
    assert "remove keys.previous from the plan" in done.stdout

    again = run_cli("keys", "rotate", "plan.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("nothing to do") == len(NAMES), again.stdout
    shown += again.stdout + again.stderr

    # The old KEK retired from the plan: verify and restore read with the new one alone.
    plan_file.write_text(original.replace("kek_file: kek.key", "kek_file: kek2.key"))
    for args in (
        ("run", "plan.yaml"),
        ("verify", "plan.yaml"),
        ("restore", "plan.yaml", "--dataset", "videos", "--out", "out"),
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        shown += done.stdout + done.stderr
    # The old KEK alone: a clear error naming the dataset and the keyring object.
    plan_file.write_text(original)
    done = run_cli("restore", "plan.yaml", "--dataset", "videos", "--out", "out2", cwd=tmp_path)
    assert done.returncode == 4
    assert done.stderr.startswith(
        "migrator: error: videos/_keys/keyring-000001.json: dataset videos: no KEK of the plan"
    ), done.stderr
    shown += done.stdout + done.stderr
    done = run_cli("keys", "rotate", "plan.yaml", "--dataset", "nope", cwd=tmp_path)
    assert done.returncode == 2 and "no dataset 'nope'" in done.stderr

    plan = load_plan(plan_file, check_sources=False)
    secrets = {
        "the old KEK": _kek_secret(tmp_path / "kek.key"),
        "the new KEK": _kek_secret(tmp_path / "kek2.key"),
    }
    new = LocalKeyProvider(tmp_path / "kek2.key")
    for name in NAMES:
        keyring = load_keyring(site_store(tmp_path), new, plan.name, name)
        for key_id in keyring.key_ids:
            key = keyring.get(bytes.fromhex(key_id))
            assert key is not None
            secrets[f"{name}'s data key {key_id}"] = key.secret
    assert_clean("the output of keys rotate, verify, restore", shown.encode(), secrets)
    assert old_kek.kek_id not in repr(keyring)


def _kek_secret(path: Path) -> bytes:
    return base64.b64decode(path.read_bytes().split(b" ", 1)[1].strip())


def site_store(root: Path) -> ObjectStore:
    """The local destination the CLI wrote."""
    return LocalStore(root / "dest" / "t")

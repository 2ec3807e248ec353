"""A valid chunk that is not the one its manifest lists is refused by every reader, by name.

Every encode draws a fresh salt, so two uploads of one chunk identity (plan, dataset,
generation, shard, sequence) both decrypt: an earlier attempt's upload, with the same plaintext
or an earlier one, is as valid as the committed one. Only the manifest's digests of the stored
bytes and of the plaintext tell them apart (docs/FORMAT.md §12, "Reader's checklist"); a chunk of
an earlier generation put in its place fails the identity check instead.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.manifest import ChunkRef, ShardManifest, open_manifest, seal_manifest
from migrator.errors import TamperedError
from migrator.keys.keyring import load_data_key
from migrator.plan.model import load_plan
from migrator.read.chain import follow_chain
from migrator.repository.chunks import chunk_identity, read_chunk
from migrator.repository.names import manifest_key
from migrator.stores.local import LocalStore
from migrator.wiring import open_key_provider, open_state
from tests.planfiles import PROFILES, VIDEOS, run_cli, write_objects, write_plan, write_profiles


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bulk run, then a sync that rewrites some records and objects: generation 2."""
    root = tmp_path_factory.mktemp("stale")
    write_profiles(root / "data/profiles", 600)
    write_objects(root / "data/videos", [0, 1000, 150_000, 70_000])
    write_plan(root, datasets=PROFILES + VIDEOS)
    assert run_cli("run", "plan.yaml", cwd=root).returncode == 0
    write_profiles(root / "data/profiles", 600, seed=9)  # every record changes
    write_objects(root / "data/videos", [0, 1000, 150_001, 70_000], seed=9)
    done = run_cli("run", "plan.yaml", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def site(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "site"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def store_of(site: Path) -> LocalStore:
    return LocalStore(site / "dest" / "t")


def listed_chunk(site: Path, dataset: str, generation: int) -> tuple[ShardManifest, ChunkRef]:
    """The first non-empty chunk a manifest of that generation lists (its chain reads it)."""
    plan = load_plan(site / "plan.yaml")
    store = store_of(site)
    key = load_data_key(store, open_key_provider(plan), plan.name, dataset)
    shard = 0
    while True:
        mkey = manifest_key(dataset, generation, shard)
        if store.head(mkey) is not None:
            manifest = open_manifest(
                store.get(mkey),
                plan=plan.name,
                dataset=dataset,
                generation=generation,
                shard=shard,
                key=key,
                object_key=mkey,
            )
            for ref in manifest.chunks:
                if ref.plain_size:
                    return manifest, ref
        shard += 1


def resealed(site: Path, dataset: str, change: Callable[[bytes], bytes]) -> str:
    """Put an earlier upload of a generation-2 chunk in its place: the same identity and data
    key, another salt, its plaintext as `change` makes it. Returns the object key."""
    plan = load_plan(site / "plan.yaml")
    store = store_of(site)
    manifest, ref = listed_chunk(site, dataset, 2)
    key = load_data_key(store, open_key_provider(plan), plan.name, dataset)
    plain = read_chunk(store, manifest, ref, key)
    earlier = ChunkEncoder(3).encode(change(plain), chunk_identity(manifest, ref), key)
    (site / "dest" / "t" / ref.object_key).write_bytes(bytes(earlier.data))
    return ref.object_key


def same_plaintext(site: Path, dataset: str) -> tuple[str, str]:
    return resealed(site, dataset, lambda plain: plain), "TamperedError"


def older_plaintext(site: Path, dataset: str) -> tuple[str, str]:
    # the same size (a listed chunk's size is checked too), other bytes
    earlier = resealed(site, dataset, lambda plain: bytes([plain[0] ^ 1]) + plain[1:])
    return earlier, "DigestMismatchError"


def previous_generation(site: Path, dataset: str) -> tuple[str, str]:
    """Generation 1's chunk at the same shard and position, copied over generation 2's."""
    _, ref = listed_chunk(site, dataset, 2)
    older = ref.object_key.replace("/g000002/", "/g000001/")
    assert (site / "dest" / "t" / older).exists()
    shutil.copyfile(site / "dest" / "t" / older, site / "dest" / "t" / ref.object_key)
    return ref.object_key, "MisplacedChunkError"


STALE = {
    "earlier upload, same plaintext": same_plaintext,
    "earlier upload, older plaintext": older_plaintext,
    "previous generation": previous_generation,
}


def error_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    return line


@pytest.mark.parametrize("dataset", ["profiles", "videos"])
@pytest.mark.parametrize("how", sorted(STALE))
def test_verify_and_restore_refuse_a_stale_copy_by_name(site: Path, dataset: str, how: str) -> None:
    object_key, error = STALE[how](site, dataset)

    checked = run_cli("verify", "plan.yaml", "--dataset", dataset, "--json", cwd=site)
    assert checked.returncode == 1, checked.stderr
    found = [(p["object_key"], p["error"]) for p in json.loads(checked.stdout)["problems"]]
    assert found == [(object_key, error)]

    restored = run_cli("restore", "plan.yaml", "--dataset", dataset, "--out", "out", cwd=site)
    assert restored.returncode == 4, restored.stderr
    assert error_line(restored.stderr).startswith(f"migrator: error: {object_key}: ")


@pytest.mark.parametrize(
    ("command", "dataset"),
    [
        (("compact", "plan.yaml", "--dataset", "profiles"), "profiles"),
        (("compact", "plan.yaml", "--dataset", "videos"), "videos"),
        (("state", "rebuild", "plan.yaml"), "profiles"),  # reads records back for inventories
    ],
)
def test_every_other_reader_refuses_a_stale_copy(
    site: Path, command: tuple[str, ...], dataset: str
) -> None:
    object_key, _ = same_plaintext(site, dataset)
    if command[0] == "state":
        shutil.rmtree(site / "state")
    done = run_cli(*command, cwd=site)
    assert done.returncode == 4, done.stderr
    assert error_line(done.stderr).startswith(f"migrator: error: {object_key}: ")
    assert "stale or replayed" in done.stderr


def test_a_stale_copy_of_a_head_manifest_is_refused(site: Path) -> None:
    """A head manifest re-sealed (same body, another salt) is valid but not the one committed."""
    plan = load_plan(site / "plan.yaml")
    store = store_of(site)
    manifest, _ = listed_chunk(site, "profiles", 2)
    key = load_data_key(store, open_key_provider(plan), plan.name, "profiles")
    mkey = manifest_key("profiles", 2, manifest.shard)
    with open_state(plan) as state:
        committed = state.shard_heads("profiles", manifest.shard)[-1]
    assert committed.generation == 2
    follow = functools.partial(follow_chain, store, plan.name, "profiles", manifest.shard, 2, key)
    assert follow(committed.manifest_xxh3)[-1].manifest == manifest

    store.put(mkey, seal_manifest(manifest, key, ChunkEncoder(3)))
    assert open_manifest(
        store.get(mkey), plan=plan.name, dataset="profiles", generation=2,
        shard=manifest.shard, key=key, object_key=mkey,
    ) == manifest  # fmt: skip
    with pytest.raises(TamperedError, match="stale or replayed") as caught:
        follow(committed.manifest_xxh3)
    assert caught.value.object_key == mkey
    checked = run_cli("verify", "plan.yaml", "--dataset", "profiles", "--json", cwd=site)
    assert checked.returncode == 1
    found = [(p["object_key"], p["error"]) for p in json.loads(checked.stdout)["problems"]]
    assert (mkey, "TamperedError") in found

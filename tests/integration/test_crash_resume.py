"""SIGKILL `migrator run` part way, run it again, and get exactly what an uninterrupted run gets.

Object part keys carry a keyed tag of the object's name, so the interrupted folders share the
reference run's KEK and wrapped data keys; everything else (state, spools, destination) is
made independently from the same source files.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrator.codec.manifest import open_manifest
from migrator.keys.keyring import load_data_key
from migrator.keys.local import LocalKeyProvider
from migrator.repository.names import manifest_key, routed_dir
from migrator.stores.local import LocalStore
from tests.planfiles import (
    PROFILES,
    VIDEOS,
    files_below,
    restored_records,
    run_cli,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.slow

DATASETS = {"profiles": 4, "videos": 3}
DEADLINE_SECONDS = 120.0


@dataclass
class Source:
    data: Path
    records: Counter[bytes]
    objects: dict[str, bytes]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    data = tmp_path_factory.mktemp("source") / "data"
    records = write_profiles(data / "profiles", 60_000, files=4)
    objects = write_objects(data / "videos", [3_000_000 + 7 * i for i in range(10)] + [0, 1])
    return Source(data, Counter(records), objects)


def make_site(root: Path, source: Source, keys_from: Path | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "data").symlink_to(source.data, target_is_directory=True)
    if keys_from is not None:
        shutil.copy2(keys_from / "kek.key", root / "kek.key")
        shutil.copy2(keys_from / "kek.signing.key", root / "kek.signing.key")  # it signed them
        for name in DATASETS:
            wrapped = Path("dest/t", name, "_keys/datakey.json")
            (root / wrapped).parent.mkdir(parents=True)
            shutil.copy2(keys_from / wrapped, root / wrapped)
    write_plan(root, datasets=PROFILES + VIDEOS, extra="workers: 2")
    return root


@pytest.fixture(scope="module")
def reference(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_site(tmp_path_factory.mktemp("reference") / "site", source)
    done = run_cli("run", "plan.yaml", cwd=root, timeout=DEADLINE_SECONDS)
    assert done.returncode == 0, done.stderr
    return root


def committed(root: Path) -> int:
    """Chunks in the state store, read as another process would; -1 before it exists."""
    db = root / "state" / "state.sqlite"
    if not db.exists():
        return -1
    try:
        with closing(sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5)) as conn:
            return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet, or WAL files not there yet
        return -1


def in_open_generations(root: Path) -> int:
    """Chunks of generations not yet committed: what a resumed run skips (a committed
    dataset's next run is a new, empty sync)."""
    db = root / "state" / "state.sqlite"
    with closing(sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM generations g"
            " WHERE g.dataset=c.dataset AND g.generation=c.generation"
            " AND g.status='committed')"
        ).fetchone()
    return int(row[0])


def spooled(root: Path) -> bool:
    """Records are being routed: routed output of the profiles bulk lies in the state_dir."""
    folder = routed_dir(root / "state", "profiles", 1)
    try:
        return any(p.stat().st_size > 0 for p in folder.glob("*.records"))
    except FileNotFoundError:
        return False


def routed_indexes(root: Path) -> dict[str, int]:
    """The profiles bulk's routed files by their index (each file's routing checkpoint): the
    index's name and when it was written."""
    folder = routed_dir(root / "state", "profiles", 1)
    out = {}
    for p in folder.glob("*.index"):
        with suppress(FileNotFoundError):  # renamed into place as we look
            out[p.name] = p.stat().st_mtime_ns
    return out


def routing_complete(root: Path) -> bool:
    """Whether the profiles routing checkpoint says routing is complete."""
    db = root / "state" / "state.sqlite"
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute("SELECT complete FROM routes").fetchone()
    except sqlite3.OperationalError:
        return False
    return row is not None and bool(row[0])


RUN = [sys.executable, "-m", "migrator", "run", "plan.yaml"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_and_kill_when(
    root: Path,
    condition: Callable[[], bool],
    *,
    command: list[str] = RUN,
    sig: signal.Signals = signal.SIGKILL,
    expect: int = -signal.SIGKILL,
) -> bool:
    """Start `migrator run`; signal it once condition() holds. False if it finished first."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=log,
            # Ctrl-C must reach the run even when these tests run where SIGINT is ignored (a
            # background job inherits SIG_IGN, and Python then installs no handler for it).
            preexec_fn=_default_sigint,
        )
        try:
            deadline = time.monotonic() + DEADLINE_SECONDS
            while proc.poll() is None:
                if condition():
                    proc.send_signal(sig)
                    proc.wait(timeout=DEADLINE_SECONDS)
                    log.seek(0)
                    assert proc.returncode == expect, log.read().decode(errors="replace")
                    if sig is signal.SIGINT:
                        lines = log.read().decode().splitlines()
                        assert lines[-1].startswith("migrator: interrupted"), lines[-3:]
                        assert "Traceback" not in "\n".join(lines)
                    return True
                assert time.monotonic() < deadline, "migrator run neither finished nor got there"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        assert proc.returncode == 0, log.read().decode(errors="replace")
        return False


def seconds_passed(seconds: float) -> Callable[[], bool]:
    started = time.monotonic()
    return lambda: time.monotonic() - started >= seconds


def finish(root: Path, already_done: int) -> None:
    """Run to completion; it must skip exactly the chunks committed before."""
    done = run_cli("run", "plan.yaml", cwd=root, timeout=DEADLINE_SECONDS)
    assert done.returncode == 0, done.stderr
    match = re.search(r"(\d+) chunks written, (\d+) already done", done.stdout)
    assert match, done.stdout
    assert int(match[2]) == max(already_done, 0)


def manifest_rows(root: Path) -> dict[tuple[str, int], list[tuple[str, str, int, int]]]:
    store = LocalStore(root / "dest" / "t")
    provider = LocalKeyProvider(root / "kek.key")
    rows = {}
    for dataset, shards in DATASETS.items():
        key = load_data_key(store, provider, "test", dataset)
        for shard in range(shards):
            mkey = manifest_key(dataset, 1, shard)
            manifest = open_manifest(
                store.get(mkey), plan="test", dataset=dataset, generation=1, shard=shard, key=key
            )
            rows[dataset, shard] = [
                (c.object_key, c.plain_xxh3, c.plain_size, c.records) for c in manifest.chunks
            ]
    return rows


def object_keys(root: Path) -> set[str]:
    """Chunks, manifests and keys; generation records are left out (every resumed run of a
    dataset its bulk had finished adds an empty sync's record), but the bulk's is there, and so
    are audit ledger segments (a resumed run commits in more batches: more segments)."""
    keys = {info.key for info in LocalStore(root / "dest" / "t").list()}
    for dataset in DATASETS:
        assert f"{dataset}/_generations/g000001.mgc" in keys
    return {k for k in keys if "/_generations/" not in k and "/_ledger/" not in k}


def check_same_as_reference(root: Path, reference: Path, source: Source) -> None:
    assert object_keys(root) == object_keys(reference)
    audited = run_cli("audit", "plan.yaml", "--full", cwd=root, timeout=DEADLINE_SECONDS)
    assert audited.returncode == 0, audited.stdout + audited.stderr  # one whole chain a shard
    assert manifest_rows(root) == manifest_rows(reference)
    assert list((root / "state").rglob("*.spool")) == []

    checked = run_cli("verify", "plan.yaml", cwd=root, timeout=DEADLINE_SECONDS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verify OK" in checked.stdout
    for dataset in DATASETS:
        out = root / "restored" / dataset
        done = run_cli("restore", "plan.yaml", "--dataset", dataset, "--out", out, cwd=root)
        assert done.returncode == 0, done.stderr
    assert restored_records(root / "restored" / "profiles") == source.records
    assert files_below(root / "restored" / "videos") == source.objects


def total_chunks(reference: Path) -> int:
    total = committed(reference)
    assert total > 100
    return total


def test_killed_while_routing_and_while_encoding(
    tmp_path: Path, source: Source, reference: Path
) -> None:
    total = total_chunks(reference)
    root = make_site(tmp_path / "site", source, keys_from=reference)

    # Early: the state store exists and records are being routed into the spools.
    assert run_and_kill_when(root, lambda: committed(root) >= 0 and spooled(root))
    assert committed(root) < total

    # Mid-encoding: some chunks are committed, not all.
    assert run_and_kill_when(root, lambda: 0 < committed(root) < total)
    before = committed(root)
    assert 0 < before < total

    finish(root, in_open_generations(root))
    assert committed(root) == total
    check_same_as_reference(root, reference, source)


def test_killed_after_a_routing_checkpoint(tmp_path: Path, source: Source, reference: Path) -> None:
    """Resume routing from a durable checkpoint part way through the source files: a file
    routed before the kill (its index written) is not routed again."""
    root = make_site(tmp_path / "site", source, keys_from=reference)

    def partly_routed() -> bool:
        return len(routed_indexes(root)) >= 1 and not routing_complete(root)

    assert run_and_kill_when(root, partly_routed)
    before = routed_indexes(root)
    assert before and not routing_complete(root)
    # And again once the resumed routing has routed another file.
    run_and_kill_when(root, lambda: len(routed_indexes(root)) > len(before))
    again = routed_indexes(root)
    assert {name: again.get(name) for name in before} == before  # kept, not routed again
    finish(root, in_open_generations(root))
    check_same_as_reference(root, reference, source)


def test_interrupted_with_ctrl_c_then_resumed(
    tmp_path: Path, source: Source, reference: Path
) -> None:
    total = total_chunks(reference)
    root = make_site(tmp_path / "site", source, keys_from=reference)
    assert run_and_kill_when(
        root, lambda: 0 < committed(root) < total, sig=signal.SIGINT, expect=130
    )
    before = committed(root)
    assert 0 < before < total
    finish(root, in_open_generations(root))
    check_same_as_reference(root, reference, source)


def test_repeated_kills_at_random_moments_converge(
    tmp_path: Path, source: Source, reference: Path
) -> None:
    total = total_chunks(reference)
    root = make_site(tmp_path / "site", source, keys_from=reference)
    rng = random.Random(20240611)
    # First at a random point of progress that comes well before the end ...
    target = rng.randint(1, int(total * 0.6))
    assert run_and_kill_when(root, lambda: committed(root) >= target)
    # ... then at random times into the resumed runs (which may finish first).
    for _ in range(3):
        run_and_kill_when(root, seconds_passed(rng.uniform(0.0, 0.8)))
    finish(root, in_open_generations(root))
    check_same_as_reference(root, reference, source)

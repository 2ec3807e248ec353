"""Hostile sizes end in a clear error, and the process stays inside its memory budget: a 64 MiB
line in a records source (routing refuses it at max_record_size), and a few kilobytes of
sealed chunk that declares hundreds of MiB of plaintext (readers refuse it by its manifest).

Each command runs in its own process; its peak resident memory comes from wait4's rusage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrator.codec.chunk import ChunkEncoder, read_header
from migrator.keys.keyring import load_keyring
from migrator.keys.local import LocalKeyProvider
from migrator.sizes import MiB
from migrator.stores.local import LocalStore
from tests.planfiles import write_plan

pytestmark = pytest.mark.integration

BUDGET = 256 * MiB  # the plans' memory_budget: records up to 32 MiB (an eighth of it)
LIMIT = 32 * MiB
LINE = 64 * MiB


# A parent of its own for each command: its children's peak is then the command's alone.
MEASURED = """\
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_measured(root: Path, *args: str) -> tuple[int, str, int]:
    """(exit code, output, peak resident bytes) of `python -m migrator ARGS` in root."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "160"}
    peak_file = root / f"peak-{args[0]}.txt"
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, str(peak_file), sys.executable, "-m", "migrator", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    kib = int(peak_file.read_text())  # Linux reports ru_maxrss in KiB
    return done.returncode, done.stdout + done.stderr, kib * 1024


def records_site(root: Path, fmt: str) -> Path:
    key = "video_id" if fmt == "csv" else "user_id"
    write_plan(
        root,
        datasets=f"  - {{name: ds, kind: records, format: {fmt}, source: {{kind: local,"
        f" path: data}}, key: {key}, shards: 2}}\n",
        chunk_size="16MiB",
        memory_budget="256MiB",
    )
    (root / "data").mkdir()
    return root / "data"


def jsonl_rows(first: int, count: int) -> bytes:
    return b"".join(b'{"user_id": "u%d"}\n' % i for i in range(first, first + count))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> int:
    """Peak memory of a run that routes and stores a small file: the interpreter, migrator
    and its libraries, and a chunk or two."""
    root = tmp_path_factory.mktemp("baseline")
    (records_site(root, "jsonl") / "a.jsonl").write_bytes(jsonl_rows(0, 1000))
    code, output, peak = run_measured(root, "run", "plan.yaml")
    assert code == 0, output[-2000:]
    return peak


@pytest.mark.parametrize("case", ["line-then-more", "no-line-feed", "csv-open-quote"])
def test_a_64_mib_record_ends_in_a_clear_error_inside_the_budget(
    case: str, tmp_path: Path, baseline: int
) -> None:
    fmt = "csv" if case.startswith("csv") else "jsonl"
    data = records_site(tmp_path, fmt)
    path = data / f"big.{fmt}"
    with path.open("wb") as fh:
        if fmt == "csv":
            head = b'video_id,title\nv1,one\nv2,"never closed\n'
            fh.write(head)
            line, offset = 3, head.index(b"v2")
            fh.write(b"more,lines\n" * (LINE // 11))
        else:
            head = jsonl_rows(0, 10)
            fh.write(head)
            line, offset = 11, len(head)
            fh.write(b'{"user_id": "big", "pad": "' + b"p" * LINE)
            if case == "line-then-more":
                fh.write(b'"}\n' + jsonl_rows(10, 10))

    code, output, peak = run_measured(tmp_path, "run", "plan.yaml")

    assert code == 3, output[-2000:]
    assert f"{path}:{line}: the record starting at byte {offset:,} " in output
    assert f"max_record_size ({LIMIT:,} bytes)" in output
    assert peak < BUDGET, f"peak {peak / MiB:.0f} MiB"
    # Beyond what any run holds: the record up to the limit and a read or two, no more.
    assert peak - baseline < LIMIT + 32 * MiB, f"{(peak - baseline) / MiB:.0f} MiB over a run"


def test_a_chunk_declaring_more_than_its_manifest_is_refused_inside_the_budget(
    tmp_path: Path,
) -> None:
    """Someone holding the data key replaces a records chunk with 8 KiB that decompress to
    512 MiB. verify names the chunk and stays near the memory of a verify of a good site."""
    (records_site(tmp_path, "jsonl") / "a.jsonl").write_bytes(jsonl_rows(0, 2000))
    code, output, _ = run_measured(tmp_path, "run", "plan.yaml")
    assert code == 0, output[-2000:]
    code, output, healthy = run_measured(tmp_path, "verify", "plan.yaml", "--json")
    assert code == 0, output[-2000:]

    store = LocalStore(tmp_path / "dest" / "t")
    victim = next(o.key for o in store.list("ds/") if "/r/" in o.key)
    original = store.get(victim)
    keyring = load_keyring(store, LocalKeyProvider(tmp_path / "kek.key"), "test", "ds")
    key = keyring.for_chunk(original, object_key=victim)
    bomb = bytes(ChunkEncoder(3).encode(bytes(512 * MiB), read_header(original).identity, key).data)
    assert len(bomb) < 24 * 1024
    (tmp_path / "dest" / "t" / victim).write_bytes(bomb)

    code, output, peak = run_measured(tmp_path, "verify", "plan.yaml", "--json")

    assert code == 1, output[-2000:]
    report = json.loads(output[output.index("{") :])
    found = [p for p in report["problems"] if p.get("object_key") == victim]
    assert found and "its manifest records" in json.dumps(found), report["problems"]
    assert peak < BUDGET and peak - healthy < 32 * MiB, f"peak {peak / MiB:.0f} MiB"

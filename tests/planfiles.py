"""Small plans and data written into a test's tmp_path, through the same YAML users write."""

from __future__ import annotations

import csv
import io
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from migrator.keys.local import init_kek_file


def write_profiles(folder: Path, count: int, *, files: int = 3, seed: int = 1) -> list[bytes]:
    """JSONL profiles across several files; returns every record's bytes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[bytes] = []
    for i in range(count):
        doc = {
            "user_id": f"u{i:09d}" if i % 7 else i,  # strings and integers both occur
            "name": rng.choice(["Zoë", "李雷", "Ana", "Bob 🎬"]),
            "bio": " ".join(rng.choice(["video", "music", "travel", "cats"]) for _ in range(20)),
            "prefs": {"user_id": "nested-not-the-key", "lang": "en"},
        }
        records.append(orjson.dumps(doc))
    for n in range(files):
        part = records[n::files]
        (folder / f"part-{n:03d}.jsonl").write_bytes(b"".join(r + b"\n" for r in part))
    return records


def write_metadata_csv(folder: Path, count: int, *, files: int = 2) -> list[bytes]:
    """CSV rows with quoted commas, quotes and a line feed inside a field; returns the rows."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["video_id", "title", "duration_s"]
    rows: list[bytes] = []
    for i in range(count):
        title = [f"clip {i}", f'say "hi", {i}', f"two\nlines {i}"][i % 3]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([f"v{i:07d}", title, i % 600])
        rows.append(buf.getvalue().encode().removesuffix(b"\n"))
    for n in range(files):
        body = b"".join(r + b"\n" for r in rows[n::files])
        (folder / f"meta-{n:02d}.csv").write_bytes(",".join(header).encode() + b"\n" + body)
    return rows


def write_objects(folder: Path, sizes: list[int], *, seed: int = 2) -> dict[str, bytes]:
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for i, size in enumerate(sizes):
        name = f"{i % 3:02x}/video {i}é.mp4" if i % 4 == 0 else f"{i % 3:02x}/v{i}.mp4"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        path.write_bytes(data)
        out[name] = data
    return out


# The policy of test plans whose destination is moto or Azurite: the partition and cloud their
# regions and accounts name, and loopback endpoints admitted.
TEST_RESIDENCY = (
    "residency: {aws_partitions: [aws], azure_clouds: [AzureCloud], allow_loopback: true}"
)


def write_plan(
    root: Path,
    *,
    datasets: str,
    destination: str = "{kind: local, path: dest, prefix: t/}",
    chunk_size: str = "64KiB",
    memory_budget: str = "2MiB",
    extra: str = "",
) -> Path:
    """A plan in root with a fresh local KEK; datasets is the YAML list body.

    An s3 or azure destination (moto, Azurite or a proxy on 127.0.0.1) gets TEST_RESIDENCY
    unless `extra` names a residency policy of its own.
    """
    kek = root / "kek.key"
    if not kek.exists():
        init_kek_file(kek)
    in_cloud = "kind: s3" in destination or "kind: azure" in destination
    if in_cloud and "residency:" not in extra:
        extra = f"{TEST_RESIDENCY}\n{extra}"
    plan = root / "plan.yaml"
    plan.write_text(
        f"""\
version: 1
name: test
state_dir: state
compression_level: 3
chunk_size: {chunk_size}
memory_budget: {memory_budget}
keys: {{provider: local, kek_file: kek.key}}
destination: {destination}
{extra}
datasets:
{datasets}
"""
    )
    return plan


PROFILES = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 4}
"""
METADATA = """\
  - {name: metadata, kind: records, format: csv, source: {kind: local, path: data/metadata},
     key: video_id, shards: 3}
"""
VIDEOS = """\
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 3,
     part_size: 64KiB}
"""


# --- running the CLI and comparing what comes back ------------------------------------------


def run_cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m migrator ARGS` in cwd, as a user would run it; never raises on failure."""
    full_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "160"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "migrator", *(str(a) for a in args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def split_records(data: bytes, *, csv_quotes: bool) -> list[bytes]:
    """Records of a file, each without its line feed; CSV records may hold quoted line feeds.

    The file must end every record with a line feed: anything after the last one is an error.
    """
    records: list[bytes] = []
    start = pos = quotes = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            assert start == len(data), f"bytes after the last record: {data[start:][:80]!r}"
            return records
        if csv_quotes:
            quotes += data.count(b'"', pos, nl)
        if quotes % 2 == 0:
            records.append(data[start:nl])
            start, quotes = nl + 1, 0
        pos = nl + 1


def restored_records(folder: Path, *, csv_header: bytes | None = None) -> Counter[bytes]:
    """Multiset of the records in every restored file; a CSV file must start with the header."""
    seen: Counter[bytes] = Counter()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files, f"nothing restored in {folder.name}"
    for path in files:
        records = split_records(path.read_bytes(), csv_quotes=csv_header is not None)
        if csv_header is not None:
            assert records[:1] == [csv_header], f"{path.name} does not start with the header"
            records = records[1:]
            assert csv_header not in records, f"{path.name} repeats the header row"
        seen.update(records)
    return seen


def files_below(root: Path) -> dict[str, bytes]:
    """Every file under root by its '/'-separated relative name."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    """Flip one bit of a file in place; a negative offset counts from the end."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


# --- cloud destinations and the demo data ------------------------------------------------

# Dummy AWS credentials and no credential files: nothing but moto ever sees these requests.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "no-such-aws-config",  # relative to the test's own folder
    "AWS_SHARED_CREDENTIALS_FILE": "no-such-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
AZURE_CONNECTION_ENV = "AZ_CONN"  # the variable an Azure destination's plan names


def s3_destination(endpoint_url: str, bucket: str, *, sizes: str = "") -> str:
    """An S3 destination on a moto server (or a proxy in front of it); sizes: extra fields."""
    extra = f", {sizes}" if sizes else ""
    return (
        f"{{kind: s3, bucket: {bucket}, prefix: t/, region: us-east-1,"
        f" endpoint_url: {endpoint_url}{extra}}}"
    )


def azure_destination(account_url: str, container: str, *, sizes: str = "") -> str:
    """An Azure destination whose connection string is in AZURE_CONNECTION_ENV."""
    extra = f", {sizes}" if sizes else ""
    return (
        f"{{kind: azure, bucket: {container}, prefix: t/, account_url: {account_url},"
        f" connection_string_env: {AZURE_CONNECTION_ENV}{extra}}}"
    )


def azurite_env(blob_url: str) -> dict[str, str]:
    """run_cli's env for an Azure destination reached at blob_url (Azurite, or a proxy)."""
    from migrator.demo.azurite import ACCOUNT_KEY, ACCOUNT_NAME

    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={blob_url};"
    )
    return {AZURE_CONNECTION_ENV: connection_string}


def demo_datasets(part_size: str) -> str:
    """The three datasets of `generate_demo_data`, read from data/ beside the plan."""
    return f"""\
  - {{name: user_profiles, kind: records, format: jsonl,
     source: {{kind: local, path: data/user_profiles}}, key: user_id, shards: 4}}
  - {{name: video_metadata, kind: records, format: csv,
     source: {{kind: local, path: data/video_metadata}}, key: video_id, shards: 3}}
  - {{name: videos, kind: objects, source: {{kind: local, path: data/videos}}, shards: 3,
     part_size: {part_size}}}
"""


DEMO_DATASET_NAMES = ("user_profiles", "video_metadata", "videos")


def check_demo_restores(root: Path, env: dict[str, str] | None = None) -> None:
    """Restore every demo dataset of root/plan.yaml and compare it with root/data."""
    from migrator.demo.synth import METADATA_HEADER

    header = ",".join(METADATA_HEADER).encode()
    out = root / "restored"
    for name in DEMO_DATASET_NAMES:
        done = run_cli(
            "restore", "plan.yaml", "--dataset", name, "--out", out / name, cwd=root, env=env
        )
        assert done.returncode == 0, done.stderr
    data = root / "data"
    profiles = restored_records(data / "user_profiles")
    assert sum(profiles.values()) > 0
    assert restored_records(out / "user_profiles") == profiles
    rows = restored_records(data / "video_metadata", csv_header=header)
    assert sum(rows.values()) > 0
    assert restored_records(out / "video_metadata", csv_header=header) == rows
    assert files_below(out / "videos") == files_below(data / "videos")


def write_demo_site(root: Path, demo_data: Path, destination: str, *, part_size: str) -> Path:
    """root/data: a copy of the demo data; root/plan.yaml: its datasets into destination."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(demo_data, root / "data")
    write_plan(
        root,
        datasets=demo_datasets(part_size),
        destination=destination,
        chunk_size="1MiB",
        memory_budget="64MiB",
        extra="upload_concurrency: 4",
    )
    return root

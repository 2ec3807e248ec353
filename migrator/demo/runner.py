"""`migrator demo`: the whole product on one machine, against S3 served by moto on 127.0.0.1.

Generate → migrate → verify → restore → compare with the source → land (plain objects and
per-shard records files in a second bucket, under SSE-KMS with a key of moto's KMS) → compare
the landed copy with the source and prove it shard by shard, with the same engine, plan model
and S3 store a real run uses; only the endpoint is local.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash
from rich.console import Console
from rich.table import Table

from migrator import Connection, check_landing, land, load_plan, restore, run, verify
from migrator.cli.render.land import land_table, mismatch_lines
from migrator.cli.render.progress import RichProgress
from migrator.cli.render.run import run_table
from migrator.cli.render.verify import verify_summary, verify_table
from migrator.demo.motoserver import kms_client, s3_client, start_moto_server
from migrator.demo.synth import generate_demo_data
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.plan.model import (
    DatasetKind,
    DatasetPlan,
    DestinationPlan,
    LocalKekPlan,
    Plan,
    S3DestinationPlan,
)
from migrator.records.keys import iter_records
from migrator.sizes import format_size
from migrator.sources.local import LocalSource
from migrator.stores.base import ObjectStore
from migrator.stores.s3 import S3Store
from migrator.wiring import open_state

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "migrator-demo"
LANDED = "migrator-demo-landed"

PLAN_TEMPLATE = """\
# Written by `migrator demo`: the demo data into S3 on a local moto server.
version: 1
name: demo
state_dir: state
compression_level: 3
chunk_size: 4MiB
memory_budget: 256MiB
# moto listens on 127.0.0.1: the policy names its partition and admits loopback endpoints.
residency: {{aws_partitions: [aws], allow_loopback: true}}
keys:
  provider: local
  kek_file: kek.key
destination:
  kind: s3
  bucket: {bucket}
  prefix: demo/
  region: us-east-1
  endpoint_url: {endpoint}
datasets:
  - name: user_profiles
    kind: records
    format: jsonl
    source: {{kind: local, path: data/user_profiles}}
    key: user_id
    shards: 16
    landing: {{bucket: {{{landed}, prefix: user_profiles/}}}}
  - name: video_metadata
    kind: records
    format: csv
    source: {{kind: local, path: data/video_metadata}}
    key: video_id
    shards: 8
    landing: {{bucket: {{{landed}, prefix: video_metadata/}}}}
  - name: videos
    kind: objects
    source: {{kind: local, path: data/videos}}
    shards: 8
    landing: {{bucket: {{{landed}, prefix: videos/}}}}
"""
# Where the new platform serves the data: plain, under the owner's KMS key (moto's here).
LANDED_BUCKET = (
    "kind: s3, bucket: {bucket}, region: us-east-1, endpoint_url: {endpoint}, sse_kms_key_id: {key}"
)


def run_demo(workdir: Path, size: int, out: Console, err: Console) -> bool:
    """Returns True when every dataset verified and restored equal to its source."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("state", "restored", "landed", "data"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    (workdir / "kek.key").unlink(missing_ok=True)

    t0 = time.monotonic()
    data = generate_demo_data(workdir / "data", size)
    gen_s = time.monotonic() - t0
    out.print(
        f"generated {format_size(data.total_bytes)} in {gen_s:.1f} s: {data.profile_count:,}"
        f" user profiles (JSONL), {data.metadata_count:,} video metadata rows (CSV),"
        f" {data.video_count:,} video files"
    )
    init_kek_file(workdir / "kek.key")

    with start_moto_server() as moto:
        client = s3_client(moto.endpoint_url)
        client.create_bucket(Bucket=BUCKET)
        client.create_bucket(Bucket=LANDED)
        kms_key = kms_client(moto.endpoint_url).create_key()["KeyMetadata"]["Arn"]
        landed = LANDED_BUCKET.format(bucket=LANDED, endpoint=moto.endpoint_url, key=kms_key)
        plan_path = workdir / "plan.yaml"
        plan_path.write_text(
            PLAN_TEMPLATE.format(bucket=BUCKET, endpoint=moto.endpoint_url, landed=landed)
        )
        plan = load_plan(plan_path)
        store = S3Store(BUCKET, "demo/", client=client)
        keys = plan.keys
        provider = LocalKeyProvider(
            keys.kek_file if isinstance(keys, LocalKekPlan) else workdir / "kek.key"
        )
        out.print(f"moto S3 on {moto.endpoint_url}; plan {plan_path}")

        with open_state(plan) as state, RichProgress(err) as progress:
            report = run(Connection(plan, store, provider, state), progress=progress)
        out.print(run_table(report))

        t1 = time.monotonic()
        with open_state(plan) as state:
            verified = verify(Connection(plan, store, provider, state), workers=4)
        verify_s = time.monotonic() - t1
        if verified.problems:
            out.print(verify_table(verified))
        out.print(f"{verify_summary(verified)} in {verify_s:.1f} s")

        results = Table(title="restore and compare with the source", title_justify="left")
        for col in ("dataset", "restored", "compared", "equal"):
            results.add_column(col)
        all_equal = verified.ok
        restorable = Connection(plan, store, provider)
        for ds in plan.datasets:
            target = workdir / "restored" / ds.name
            rr = restore(restorable, ds.name, target, workers=4)
            restored = f"{rr.files} files, {format_size(rr.bytes)}"
            all_equal &= _compare_row(results, ds, workdir, target, restored)
        out.print(results)
        all_equal &= _land_and_compare(plan, store, provider, client, workdir, out)
    total = time.monotonic() - t0
    verdict = "[green]demo OK[/]" if all_equal else "[red]demo FAILED[/]"
    out.print(
        f"{verdict}: {format_size(report.bytes_in)} migrated at"
        f" {report.bytes_in / report.seconds / 1e6:.1f} MB/s into S3 (moto), verified by reading"
        f" every chunk back, restored byte-identical, landed equal to the source;"
        f" {total:.1f} s in all"
    )
    return all_equal


def _land_and_compare(
    plan: Plan,
    store: ObjectStore,
    provider: KeyProvider,
    client: S3Client,
    workdir: Path,
    out: Console,
) -> bool:
    """Land every dataset, then compare the landed copy with the source and prove it."""

    def landing_store(plan: Plan, dest: DestinationPlan) -> ObjectStore:
        assert isinstance(dest, S3DestinationPlan)
        return S3Store(dest.bucket, dest.prefix, client=client, sse_kms_key_id=dest.sse_kms_key_id)

    t0 = time.monotonic()
    with open_state(plan) as state:
        conn = Connection(plan, store, provider, state, landing_store=landing_store)
        reports = land(conn)
        checked = check_landing(conn)
    out.print(land_table(reports))
    results = Table(title="landed copy against the source", title_justify="left")
    for col in ("dataset", "landed", "compared", "equal"):
        results.add_column(col)
    all_equal = True
    for ds in plan.datasets:
        assert ds.landing is not None and ds.landing.bucket is not None
        landed = landing_store(plan, ds.landing.bucket)
        folder = workdir / "landed" / ds.name
        shutil.rmtree(folder, ignore_errors=True)
        for info in landed.list():
            path = folder / info.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(landed.get(info.key))
        where = f"s3://{LANDED}/{ds.landing.bucket.prefix}"
        all_equal &= _compare_row(results, ds, workdir, folder, where)
    out.print(results)
    bad = [s for s in checked if not s.match]
    for line in mismatch_lines(checked):
        out.print(line)
    out.print(f"landed and proven in {time.monotonic() - t0:.1f} s")
    return all_equal and not bad


def _compare_row(results: Table, ds: DatasetPlan, workdir: Path, copy: Path, what: str) -> bool:
    """Compares a copy of the dataset with its source, as a row of `results`; True if equal."""
    equal, compared = _same_as_source(ds, workdir / "data" / ds.name, copy)
    results.add_row(ds.name, what, compared, "[green]yes[/]" if equal else "[red]NO[/]")
    return equal


def _same_as_source(ds: DatasetPlan, source: Path, copy: Path) -> tuple[bool, str]:
    """A restored or landed copy against the source: records as a multiset, files by name."""
    if ds.kind is DatasetKind.RECORDS:
        return _same_records(source, copy, ds.format == "csv")
    return _same_files(source, copy)


def _record_digests(folder: Path, is_csv: bool) -> Counter[bytes]:
    """Multiset of record digests; the CSV header row of each file is not a record."""
    seen: Counter[bytes] = Counter()
    source = LocalSource(folder)
    for obj in source.list():
        if obj.name.startswith("."):
            continue
        first = is_csv
        with source.open(obj) as fh:
            for batch in iter_records(fh, "csv" if is_csv else "jsonl"):
                for rec in batch:
                    if first:
                        first = False
                        continue
                    if rec.strip():
                        seen[xxhash.xxh3_128_digest(rec)] += 1
    return seen


def _same_records(source: Path, restored: Path, is_csv: bool) -> tuple[bool, str]:
    a = _record_digests(source, is_csv)
    b = _record_digests(restored, is_csv)
    return a == b, f"{sum(b.values()):,} of {sum(a.values()):,} records, byte for byte"


def _same_files(source: Path, restored: Path) -> tuple[bool, str]:
    def digests(root: Path) -> dict[str, bytes]:
        return {
            obj.name: xxhash.xxh3_128_digest((root / obj.name).read_bytes())
            for obj in LocalSource(root).list()
        }

    a, b = digests(source), digests(restored)
    return a == b, f"{len(b):,} of {len(a):,} files, byte for byte"

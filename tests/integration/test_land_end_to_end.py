"""Landing into real servers: records into tables of a private PostgreSQL, objects into moto under
SSE-KMS and into Azurite, over a bulk and five syncs of inserts, updates, deletes and added,
rewritten and removed objects; after each, the landed copy equals the source (objects byte for
byte, tables as the source's multiset of records, one row per key served). Two landing workers
over a PostgreSQL state store never land one shard both; a landing killed inside a table's
transaction ends as an uninterrupted one."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import migrator
from migrator.demo.motoserver import MotoServer, kms_client, s3_client
from migrator.landing.engine import Lander
from migrator.landing.targets import DatasetTargets, open_targets
from migrator.plan.model import DatasetPlan, Plan
from migrator.wiring import open_key_provider, open_state, open_store
from tests.landing_site import CSV_HEADER, LandingSite, assert_all_match, datasets_yaml
from tests.planfiles import AZURE_CONNECTION_ENV, TEST_RESIDENCY, azurite_env, split_records

pytestmark = pytest.mark.integration

DB_ENV = "LANDING_TEST_DATABASE_URL"


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def table_records(url: str, table: str) -> tuple[Counter[bytes], Counter[str]]:
    """Every landed record (the served ones and the duplicates kept aside) as a multiset, and
    how many rows of the served table each key has."""
    with psycopg2.connect(_dsn(url)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT record FROM {table} UNION ALL SELECT record FROM {table}_duplicates")
        records = Counter(row[0].encode() for row in cur.fetchall())
        cur.execute("SELECT key_hash FROM " + table)
        served = Counter(bytes(row[0]).hex() for row in cur.fetchall())
    return records, served


def moto_landing(moto: MotoServer) -> tuple[str, str]:
    """A fresh landing bucket on moto and a KMS key of moto's for it: (bucket, key ARN)."""
    bucket = f"landed-{time.monotonic_ns()}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    arn = kms_client(moto.endpoint_url).create_key()["KeyMetadata"]["Arn"]
    return bucket, str(arn)


def check_s3_objects(moto: MotoServer, bucket: str, arn: str, expected: dict[str, bytes]) -> None:
    s3 = s3_client(moto.endpoint_url)
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="videos/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    landed = {}
    for key in keys:
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["ServerSideEncryption"] == "aws:kms", key  # the owner's key, service-side
        assert got["SSEKMSKeyId"] == arn, key
        landed[key.removeprefix("videos/")] = got["Body"].read()
    assert landed == expected


def test_a_bulk_and_five_syncs_land_into_postgresql_and_moto(
    tmp_path: Path, postgres_url: str, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_ENV, postgres_url)
    bucket, arn = moto_landing(moto_server)
    videos = (
        f"{{bucket: {{kind: s3, bucket: {bucket}, prefix: videos/, region: us-east-1,"
        f" endpoint_url: {moto_server.endpoint_url}, sse_kms_key_id: {arn}}}}}"
    )
    site = LandingSite(
        tmp_path,
        datasets_yaml(
            f"{{table: {{url_env: {DB_ENV}, name: app.profiles}}}}",
            f"{{table: {{url_env: {DB_ENV}, name: metadata}}}}",
            videos,
        ),
        extra=TEST_RESIDENCY,
    )
    site.sync()
    for step in range(6):
        if step:
            site.sources.change(step)
            site.sync()
        site.land()
        check_s3_objects(moto_server, bucket, arn, site.sources.videos)
        profiles, served = table_records(postgres_url, "app.profiles")
        assert profiles == site.sources.profile_records()
        assert set(served.values()) == {1}  # one served row per key
        assert len(served) < sum(profiles.values())  # a key held twice: one row aside
        metadata, _ = table_records(postgres_url, "metadata")
        assert metadata == site.sources.metadata_records()
        assert_all_match(site.check())
    # The tables are the platform's: typed columns to query, the jsonb document beside the text.
    with psycopg2.connect(_dsn(postgres_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM app.profiles WHERE doc->>'name' IS NOT NULL")
        assert cur.fetchone()[0] > 0  # type: ignore[index]
        cur.execute("SELECT title FROM metadata WHERE title LIKE 'two%' LIMIT 1")
        assert "\n" in cur.fetchone()[0]  # type: ignore[index]
    assert migrator.verify(site.plan, sample=0.2, seed=1).ok  # what the gate requires
    assert migrator.cutover(site.plan).ready


def test_a_bulk_and_five_syncs_land_into_azurite(
    tmp_path: Path, azure_container: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, blob_url = azure_container
    for name, value in azurite_env(blob_url).items():
        monkeypatch.setenv(name, value)
    account = blob_url.rstrip("/")

    def bucket(prefix: str) -> str:
        return (
            f"{{bucket: {{kind: azure, bucket: {container}, prefix: {prefix}, account_url:"
            f" {account}, connection_string_env: {AZURE_CONNECTION_ENV}}}}}"
        )

    site = LandingSite(
        tmp_path,
        datasets_yaml(bucket("profiles/"), bucket("metadata/"), bucket("videos/")),
        extra=TEST_RESIDENCY,
    )
    ds = {d.name: d for d in site.plan.datasets}
    site.sync()
    for step in range(6):
        if step:
            site.sources.change(step)
            site.sync()
        site.land()
        assert _landed(site.plan, ds["videos"]) == site.sources.videos
        profiles = _landed(site.plan, ds["profiles"])
        assert _records(profiles, None) == site.sources.profile_records()
        metadata = _landed(site.plan, ds["metadata"])
        assert _records(metadata, CSV_HEADER) == site.sources.metadata_records()
        assert_all_match(site.check())


def _landed(plan: Plan, ds: DatasetPlan) -> dict[str, bytes]:
    from migrator.wiring import open_landing_store

    assert ds.landing is not None and ds.landing.bucket is not None
    store = open_landing_store(plan, ds.landing.bucket)
    return {o.key: store.get(o.key) for o in store.list()}


def _records(files: dict[str, bytes], header: bytes | None) -> Counter[bytes]:
    seen: Counter[bytes] = Counter()
    for data in files.values():
        records = split_records(data, csv_quotes=header is not None)
        seen.update(records[1:] if header is not None else records)
    return seen


class _Slow:
    """A landing target that takes its time and tells which worker applied what."""

    def __init__(self, inner: Any, worker: str, log: list[tuple[str, str, int, int]]) -> None:
        self.inner, self.worker, self.log = inner, worker, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, change: Any) -> None:
        time.sleep(0.05)
        self.inner.apply(change)
        self.log.append((self.worker, change.dataset, change.shard, change.generation))


def test_two_landing_workers_share_a_plan_and_never_land_one_shard_both(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATOR_STATE_URL", postgres_url)
    monkeypatch.setenv(DB_ENV, postgres_url)
    many = """\
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 16,
     landing: {bucket: {kind: local, path: landed/videos}}}
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 12, landing: {table: {url_env: LANDING_TEST_DATABASE_URL, name: p}}}
"""
    site = LandingSite(tmp_path, many, extra=TEST_RESIDENCY)
    for i in range(64):
        site.sources.videos[f"more/{i}.bin"] = site.sources.rng.randbytes(2000)
    site.sources.write()
    site.sync()
    log: list[tuple[str, str, int, int]] = []
    reports: dict[str, list[migrator.LandReport]] = {}

    def worker(name: str) -> None:
        plan = site.plan

        def targets(plan: Plan, ds: DatasetPlan) -> DatasetTargets:
            opened = open_targets(plan, ds)
            if opened.objects is not None:
                opened.objects = _Slow(opened.objects, name, log)
            if opened.table is not None:
                opened.table = _Slow(opened.table, name, log)
            return opened

        with open_state(plan) as state:
            lander = Lander(plan, open_store(plan), open_key_provider(plan), state, targets)
            lander.worker_id = name
            reports[name] = lander.land(worker=True)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    by_worker: dict[str, set[tuple[str, int, int]]] = {"w1": set(), "w2": set()}
    for name, dataset, shard, generation in log:
        by_worker[name].add((dataset, shard, generation))
    applied = [entry[1:] for entry in log]
    assert len(applied) == len(set(applied))  # nothing applied twice
    assert by_worker["w1"] and by_worker["w2"]  # both took part
    landed = {(r.dataset, s) for runs in reports.values() for r in runs for s in r.shards_landed}
    assert len(landed) == sum(len(r.shards_landed) for runs in reports.values() for r in runs)
    assert landed == {("videos", s) for s in range(16)} | {("profiles", s) for s in range(12)}
    assert_all_match(site.check())


def test_kill_9_inside_a_tables_transaction_then_land_again(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_ENV, postgres_url)
    one = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 3, landing: {table: {url_env: LANDING_TEST_DATABASE_URL, name: p}}}
"""
    site = LandingSite(
        tmp_path, one, extra=TEST_RESIDENCY, chunk_size="1MiB", memory_budget="64MiB"
    )
    rng = site.sources.rng
    from tests.landing_site import profile

    site.sources.profiles["big.jsonl"] = [profile(i, rng) for i in site.sources._ids(60_000)]
    site.sources.write()
    site.sync()

    def rows() -> int:
        try:
            with psycopg2.connect(_dsn(postgres_url)) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM migrator_landed")
                return int(cur.fetchone()[0])  # type: ignore[index]
        except psycopg2.Error:
            return 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "land", "plan.yaml"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and rows() < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None, "landing finished before the kill"
    time.sleep(0.05)  # into the next shard's transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert rows() < 3
    site.land()
    records, _ = table_records(postgres_url, "p")
    assert records == site.sources.profile_records()
    assert_all_match(site.check())

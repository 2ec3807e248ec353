"""Dagster's dry-run target lands into stand-ins: its Connection carries the stand-ins' landing
store and table URL, so a plan's landing bucket (an S3 endpoint nothing answers) and its table
(a variable never set) are never opened; without emulators they stand in as folders of the dry
run's, a table's records as one file per shard."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import Failure

import migrator
from migrator.demo.standins import StandIns
from migrator.plan.model import Plan, load_plan
from migrator.stores.local import LocalStore
from pipelines.resources import StandInTarget
from tests.planfiles import write_objects, write_plan, write_profiles

UNSET_URL = "LANDING_TARGET_TEST_URL_NEVER_SET"
LANDING_KEY = "arn:aws:kms:us-east-1:111122223333:key/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
DATASETS = f"""\
  - {{name: profiles, kind: records, format: jsonl, source: {{kind: local, path: data/profiles}},
     key: user_id, shards: 2, landing: {{table: {{url_env: {UNSET_URL}, name: profiles}}}}}}
  - {{name: videos, kind: objects, source: {{kind: local, path: data/videos}}, shards: 2,
     landing: {{bucket: {{kind: s3, bucket: landed, prefix: videos/, region: us-east-1,
                endpoint_url: 'http://127.0.0.1:9', sse_kms_key_id: '{LANDING_KEY}'}}}}}}
"""


def landed_plan(tmp_path: Path) -> Plan:
    write_profiles(tmp_path / "data/profiles", 200, files=2)
    write_objects(tmp_path / "data/videos", [90_000, 1000, 0])
    extra = "residency: {aws_partitions: [aws], allow_loopback: true}"
    return load_plan(write_plan(tmp_path, datasets=DATASETS, extra=extra))


@pytest.fixture
def no_real_landing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the plan's own landing bucket or table fails the test."""

    def refused(*args: object) -> None:
        raise AssertionError("the plan's own landing target was opened")

    monkeypatch.delenv(UNSET_URL, raising=False)
    monkeypatch.setattr("migrator.wiring.open_landing_store", refused)
    monkeypatch.setattr("migrator.wiring.landing_table_url", refused)


@pytest.mark.usefixtures("no_real_landing")
def test_the_dry_run_targets_connection_lands_into_stand_ins(tmp_path: Path) -> None:
    plan = landed_plan(tmp_path)
    with StandInTarget().open(plan) as opened:
        conn = opened.connection
        assert opened.dry_run
        assert conn.landing_store is not None and conn.table_url is not None
        assert isinstance(getattr(conn.landing_store, "__self__", None), StandIns)
        assert isinstance(getattr(conn.table_url, "__self__", None), StandIns)
        migrator.run(conn)
        reports = migrator.land(conn)
        checked = migrator.check_landing(conn)
        landed = conn.plan.datasets
        described = {ds.name: conn.landing_targets(conn.plan, ds).describe() for ds in landed}

    assert {r.dataset: (r.records, r.objects) for r in reports} == {
        "profiles": (200, 0),
        "videos": (0, 3),
    }
    assert checked and all(s.match for s in checked)
    stand_in = tmp_path / "state" / "dagster-dry-run" / "landed"
    assert all(str(stand_in) in where for found in described.values() for where in found)
    videos = LocalStore(stand_in / "videos")
    assert sorted(info.key for info in videos.list()) == sorted(
        p.relative_to(tmp_path / "data/videos").as_posix()
        for p in (tmp_path / "data/videos").rglob("*")
        if p.is_file()
    )
    # The table, with no PostgreSQL given, as one records file per shard.
    assert len(list(LocalStore(stand_in / "profiles").list())) == 2
    assert not (tmp_path / "state" / "state.sqlite").exists()


def test_a_stand_in_postgresql_must_be_on_this_machine(tmp_path: Path) -> None:
    plan = landed_plan(tmp_path)
    far = StandInTarget(postgres_url="postgresql+psycopg2://u:p@db.example.org:5432/x")
    with pytest.raises(Failure, match="must run on this machine"), far.open(plan):
        pass

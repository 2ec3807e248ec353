"""`migrator land PLAN --dry-run`: a GovCloud plan whose datasets land into an S3 bucket under a
GovCloud KMS key and into PostgreSQL tables at a host that does not exist. The dry run lands
into moto (under a key of moto's KMS) and a private PostgreSQL on 127.0.0.1 instead, proves the
landing, and never reaches for the plan's bucket, key or database."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from azure.storage.blob import ContainerClient

from migrator.cli import main
from migrator.demo import postgres
from migrator.demo.azurite import Azurite
from migrator.demo.standins import StandIns
from migrator.plan.model import load_plan
from migrator.stores.local import LocalStore
from tests.planfiles import (
    run_cli,
    split_records,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.integration

GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
LANDING_KEY = (
    "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/7d1e2f3a-4b5c-4d6e-8f9a-0b1c2d3e4f5a"
)
DB_ENV = "LANDING_DRY_RUN_DATABASE_URL"
# A host that cannot resolve: anything that tried to reach the plan's database would fail.
UNREACHABLE_DB = "postgresql+psycopg2://u:p@db.invalid:5432/x"
LANDED = f"kind: s3, bucket: landed-gov, region: us-gov-west-1, sse_kms_key_id: '{LANDING_KEY}'"
DATASETS = f"""\
  - {{name: profiles, kind: records, format: jsonl, source: {{kind: local, path: data/profiles}},
     key: user_id, shards: 4,
     landing: {{table: {{url_env: {DB_ENV}, name: app.user_profiles}}}}}}
  - {{name: metadata, kind: records, format: csv, source: {{kind: local, path: data/metadata}},
     key: video_id, shards: 3,
     landing: {{bucket: {{{LANDED}, prefix: metadata/}},
               table: {{url_env: {DB_ENV}, name: video_metadata}}}}}}
  - {{name: videos, kind: objects, source: {{kind: local, path: data/videos}}, shards: 3,
     part_size: 64KiB, landing: {{bucket: {{{LANDED}, prefix: videos/}}}}}}
"""
# Any request to a real host goes to a port nothing listens on; moto on 127.0.0.1 is exempt.
NO_WAY_OUT = {
    DB_ENV: UNREACHABLE_DB,
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def landed_gov_plan(tmp_path: Path) -> Path:
    """A GovCloud plan (archive, KMS key, landing bucket and its key) whose tables are at
    db.invalid: a residency policy that admits that host, as a real plan would name its own."""
    write_profiles(tmp_path / "data/profiles", 800)
    write_metadata_csv(tmp_path / "data/metadata", 300)
    write_objects(tmp_path / "data/videos", [300_000, 70_000, 1, 0])
    plan = write_plan(
        tmp_path,
        datasets=DATASETS,
        destination=(
            "{kind: s3, bucket: archive-gov, prefix: m/, region: us-gov-west-1,"
            " endpoint_url: 'https://s3-fips.us-gov-west-1.amazonaws.com'}"
        ),
        extra="residency: {aws_partitions: [aws-us-gov], landing_hosts: [db.invalid]}",
    )
    text = plan.read_text().replace(
        "keys: {provider: local, kek_file: kek.key}",
        f"keys: {{provider: aws-kms, key_id: '{GOV_KEY}'}}",
    )
    plan.write_text(text)
    return plan


def test_land_dry_run_lands_into_moto_and_a_private_postgresql(tmp_path: Path) -> None:
    landed_gov_plan(tmp_path)
    ran = run_cli("run", "plan.yaml", "--dry-run", cwd=tmp_path, env=NO_WAY_OUT)
    assert ran.returncode == 0, ran.stderr
    assert "verify OK" in ran.stdout

    result = run_cli("land", "plan.yaml", "--dry-run", cwd=tmp_path, env=NO_WAY_OUT, timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "nothing sent to the real clouds or databases" in out
    lines = out.splitlines()
    stood_in = {
        what: next((line for line in lines if line.strip().startswith(what)), "")
        for what in (
            "destination s3://archive-gov/m/",
            "KMS key " + GOV_KEY,
            "landing s3://landed-gov/videos/ (us-gov-west-1) of videos",
            "landing s3://landed-gov/metadata/ (us-gov-west-1) of metadata",
            "landing table app.user_profiles of profiles",
            "landing table video_metadata of metadata",
        )
    }
    assert all(stood_in.values()), out
    for what in ("videos", "metadata"):
        line = stood_in[f"landing s3://landed-gov/{what}/ (us-gov-west-1) of {what}"]
        assert f"under KMS key {LANDING_KEY} → moto S3 at http://127.0.0.1:" in line
        assert "under moto KMS key arn:" in line and line.count(LANDING_KEY) == 1
    for table in ("app.user_profiles of profiles", "video_metadata of metadata"):
        line = stood_in[f"landing table {table}"]
        assert f"(the database in {DB_ENV}) → PostgreSQL at 127.0.0.1:" in line
        assert "database dry_run" in line and "db.invalid" not in line
    assert "verify OK" in out
    # Every dataset landed, and every shard of every target holds what the archive holds:
    # 4 profile shards (table), 3 metadata shards twice (files and table), 3 video shards.
    assert "landing check: all 13 shard landings (4 targets) hold what the archive holds" in out
    rows = {
        cells[0]: cells[1:]
        for line in lines
        if (cells := [c.strip() for c in line.split("│")[1:-1]])
    }
    # generation, shards landed, applied, records handed to targets, objects
    assert rows["profiles"][:5] == ["1", "4", "4", "800", "0"]
    assert rows["metadata"][:5] == ["1", "3", "6", "600", "0"]  # to the files and the table
    assert rows["videos"][:5] == ["1", "3", "3", "0", "4"]
    assert "Traceback" not in result.stderr
    # The dry run's state stays apart from the real run's; no real landing was made.
    assert (tmp_path / "state" / "dry-run").is_dir()
    assert not (tmp_path / "state" / "state.sqlite").exists()


def land_in_process(
    *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int | str | None, str, str]:
    """`migrator land ARGS` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as ended:
        main(["land", *args])
    captured = capsys.readouterr()
    return ended.value.code, captured.out, captured.err


def test_without_postgresql_one_line_says_what_to_do_and_tables_can_land_as_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    landed_gov_plan(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name, value in NO_WAY_OUT.items():
        monkeypatch.setenv(name, value)
    # As on a machine without PostgreSQL's server: no pg_config, no Debian server folder.
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(postgres, "glob", SimpleNamespace(glob=lambda pattern: []))

    code, out, err = land_in_process("plan.yaml", "--dry-run", capsys=capsys)

    assert code == 2, out + err
    [line] = err.strip().splitlines()
    assert line.startswith("migrator: error: a dry run lands tables into a private PostgreSQL")
    assert "`bash scripts/ensure-postgres.sh`" in line and "--tables-as-files" in line
    assert not (tmp_path / "state" / "dry-run" / "state.sqlite").exists()  # nothing ran

    code, out, err = land_in_process("plan.yaml", "--dry-run", "--tables-as-files", capsys=capsys)

    assert code == 0, out + err
    assert (
        f"landing table app.user_profiles of profiles (the database in {DB_ENV}) → its records"
        " as per-shard files in "
    ) in out
    assert "landing table video_metadata of metadata" in out
    assert "→ not landed: its records land as files only" in out
    assert "PostgreSQL at" not in out
    assert "landing check: all 10 shard landings (3 targets) hold what the archive holds" in out
    # The profiles' stand-in: one JSONL file per shard, every source record in one of them.
    landed = LocalStore(tmp_path / "state" / "dry-run" / "landed" / "profiles")
    files = [landed.get(info.key) for info in landed.list()]
    assert len(files) == 4
    sources = (tmp_path / "data/profiles").iterdir()
    expected = Counter(r for f in sources for r in split_records(f.read_bytes(), csv_quotes=False))
    assert Counter(r for data in files for r in split_records(data, csv_quotes=False)) == expected


def test_an_azure_landing_stands_in_as_a_container_on_azurite(
    tmp_path: Path, azurite: Azurite
) -> None:
    write_objects(tmp_path / "data/videos", [1000])
    plan = load_plan(
        write_plan(
            tmp_path,
            datasets=(
                "  - {name: videos, kind: objects, source: {kind: local, path: data/videos},"
                " shards: 2,\n     landing: {bucket: {kind: azure, bucket: landed, prefix: v/,"
                " account_url: 'https://owner.blob.core.usgovcloudapi.net',"
                " encryption_scope: owner-scope}}}\n"
            ),
            destination=(
                "{kind: azure, bucket: archive, prefix: m/,"
                " account_url: 'https://acct.blob.core.usgovcloudapi.net'}"
            ),
            extra="residency: {azure_clouds: [AzureUSGovernment]}",
        )
    )
    dest = plan.datasets[0].landing.bucket if plan.datasets[0].landing else None
    assert dest is not None
    with StandIns.for_dagster(plan, azure_connection_string=azurite.connection_string) as ins:
        store = ins.landing_store(ins.plan, dest)
        assert ins.landing_store(ins.plan, dest) is store  # opened once
        store.put("a/b.mp4", b"landed")
    assert store.describe().startswith("azure://")
    assert ins.substitutions == [
        "landing https://owner.blob.core.usgovcloudapi.net/landed/v/ of videos → Azurite at"
        f" {azurite.blob_url}"
    ]
    container = ContainerClient.from_connection_string(azurite.connection_string, "landed")
    assert container.get_blob_client("v/a/b.mp4").download_blob().readall() == b"landed"

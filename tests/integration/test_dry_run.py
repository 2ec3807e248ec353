"""`migrator run PLAN --dry-run`: the plan's clouds swapped for moto/Azurite, every chunk read
back, and a report with requests, residency checks and a forecast."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.planfiles import PROFILES, VIDEOS, run_cli, write_objects, write_plan, write_profiles

pytestmark = pytest.mark.integration

GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"


def gov_plan(tmp_path: Path, *, with_data: bool) -> Path:
    if with_data:
        write_profiles(tmp_path / "data/profiles", 2000)
        write_objects(tmp_path / "data/videos", [300_000, 70_000, 0])
    plan = write_plan(
        tmp_path,
        datasets=PROFILES + VIDEOS,
        destination=(
            "{kind: s3, bucket: archive-gov, prefix: m/, region: us-gov-west-1,"
            " endpoint_url: 'https://s3-fips.us-gov-west-1.amazonaws.com'}"
        ),
        extra="residency: {aws_partitions: [aws-us-gov]}\nbandwidth_limit: 100MiB/s",
    )
    text = plan.read_text().replace(
        "keys: {provider: local, kek_file: kek.key}",
        f"keys: {{provider: aws-kms, key_id: '{GOV_KEY}'}}",
    )
    plan.write_text(text)
    return plan


def test_dry_run_of_a_govcloud_plan(tmp_path: Path) -> None:
    gov_plan(tmp_path, with_data=True)
    result = run_cli("run", "plan.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing sent to the real clouds" in out
    assert "moto S3 at http://127.0.0.1:" in out and "moto KMS key" in out
    assert "destination.region" in out and "aws-us-gov" in out and "REFUSED" not in out
    assert "verify OK" in out
    assert "requests by type" in out and "put" in out
    assert "forecast of the real run" in out and "time over the link" in out
    assert "uploads capped at 100.0 MiB/s" in out
    # The rehearsal's state is apart from the real run's, and nothing real was created.
    assert (tmp_path / "state" / "dry-run").is_dir()
    assert not (tmp_path / "state" / "state.sqlite").exists()


def test_dry_run_samples_a_source_out_of_reach(tmp_path: Path) -> None:
    gov_plan(tmp_path, with_data=False)
    result = run_cli("run", "plan.yaml", "--dry-run", "--synthetic", "2MiB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "source out of reach" in result.stdout and "synthetic sample" in result.stdout
    assert "verify OK" in result.stdout


def test_dry_run_refuses_what_residency_refuses(tmp_path: Path) -> None:
    plan = gov_plan(tmp_path, with_data=True)
    plan.write_text(plan.read_text().replace("us-gov-west-1,", "us-east-1,"))
    result = run_cli("run", "plan.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 2
    assert "residency" in result.stderr and "destination.region" in result.stderr


def test_dry_run_into_azurite(tmp_path: Path, azurite: object) -> None:
    write_profiles(tmp_path / "data/profiles", 500)
    write_objects(tmp_path / "data/videos", [100_000])
    write_plan(
        tmp_path,
        datasets=PROFILES + VIDEOS,
        destination=(
            "{kind: azure, bucket: archive, prefix: m/,"
            " account_url: 'https://acct.blob.core.usgovcloudapi.net'}"
        ),
        extra="residency: {azure_clouds: [AzureUSGovernment]}",
    )
    result = run_cli("run", "plan.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Azurite at http://127.0.0.1:" in result.stdout
    assert "verify OK" in result.stdout

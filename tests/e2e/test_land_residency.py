"""A landing target outside the residency policy is refused before any byte moves: `run` and
`land` both stop with the field named, and neither the archive nor the state store, nor the
landing target, receives anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.landing_site import LandingSite, datasets_yaml
from tests.planfiles import run_cli

GOV = "residency: {aws_partitions: [aws-us-gov], allow_loopback: true}"
GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
COM_KEY = "arn:aws:kms:us-east-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
LOCAL = "{bucket: {kind: local, path: landed/x}}"


@pytest.mark.parametrize(
    ("landing", "field"),
    [
        (  # a bucket in a commercial region
            f"{{bucket: {{kind: s3, bucket: platform-videos, region: us-east-1,"
            f" sse_kms_key_id: {COM_KEY}}}}}",
            "datasets[videos].landing.bucket.region",
        ),
        (  # a GovCloud bucket, but its objects sealed under a commercial key
            f"{{bucket: {{kind: s3, bucket: platform-videos, region: us-gov-west-1,"
            f" sse_kms_key_id: {COM_KEY}}}}}",
            "datasets[videos].landing.bucket.sse_kms_key_id",
        ),
        (  # an Azure public-cloud account
            "{bucket: {kind: azure, bucket: videos, account_url:"
            " https://acct.blob.core.windows.net}}",
            "datasets[videos].landing.bucket.account_url",
        ),
    ],
)
def test_a_landing_outside_the_policy_is_refused_before_any_byte_moves(
    tmp_path: Path, landing: str, field: str
) -> None:
    site = LandingSite(tmp_path, datasets_yaml(LOCAL.replace("x", "p"), LOCAL, landing), extra=GOV)
    for command in ("run", "land"):
        result = run_cli(command, "plan.yaml", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert field in result.stderr, result.stderr
    assert not (tmp_path / "dest").exists()  # the archive: nothing written
    assert not (tmp_path / "state").exists()  # no state store made
    assert not (tmp_path / "landed").exists()
    assert site.plan.datasets[2].landing is not None


def test_a_table_on_a_host_the_policy_does_not_name_is_refused(tmp_path: Path) -> None:
    table = "{table: {url_env: LANDING_DB, name: profiles}}"
    LandingSite(tmp_path, datasets_yaml(table, LOCAL, LOCAL.replace("x", "v")), extra=GOV)
    env = {"LANDING_DB": "postgresql+psycopg2://app:s3cret@db.example.com:5432/platform"}
    result = run_cli("land", "plan.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "datasets[profiles].landing.table" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout  # never the password
    assert not (tmp_path / "state").exists()

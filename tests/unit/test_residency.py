"""Residency refusals: nothing outside the allowed clouds, checked from the plan alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.plan.model import Plan, load_plan
from migrator.residency import ResidencyError, check_residency, enforce_residency
from tests.planfiles import run_cli

GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
COM_KEY = "arn:aws:kms:us-east-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
RESIDENCY = "residency: {aws_partitions: [aws-us-gov], azure_clouds: [AzureUSGovernment]}"


def plan(tmp_path: Path, destination: str, keys: str, residency: str = RESIDENCY) -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(
        f"""\
version: 1
name: gov
state_dir: state
{residency}
keys: {keys}
destination: {destination}
datasets:
  - {{name: d, kind: objects, source: {{kind: local, path: data}}, shards: 2}}
"""
    )
    return load_plan(path, check_sources=False)


S3_GOV = "{kind: s3, bucket: bucket-gov, region: us-gov-west-1}"
KMS_GOV = f"{{provider: aws-kms, key_id: '{GOV_KEY}'}}"


def refused(p: Plan, allow_loopback: bool = False) -> dict[str, str]:
    return {
        c.field: c.reason
        for c in check_residency(p, allow_loopback=allow_loopback)
        if not c.allowed
    }


def test_govcloud_plan_passes(tmp_path: Path) -> None:
    p = plan(
        tmp_path,
        "{kind: s3, bucket: bucket-gov, region: us-gov-west-1,"
        " endpoint_url: 'https://s3-fips.us-gov-west-1.amazonaws.com'}",
        KMS_GOV,
    )
    checks = enforce_residency(p)
    assert {c.field for c in checks} == {
        "destination.region",
        "destination.endpoint_url",
        "keys.key_id",
    }
    assert all(c.allowed and c.place == "aws-us-gov" for c in checks)


def test_commercial_region_refused(tmp_path: Path) -> None:
    p = plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV)
    assert "partition aws is not" in refused(p)["destination.region"]
    with pytest.raises(ResidencyError) as err:
        enforce_residency(p)
    assert "plan.yaml" in str(err.value) and "destination.region" in str(err.value)


def test_non_gov_kms_arn_refused(tmp_path: Path) -> None:
    p = plan(tmp_path, S3_GOV, f"{{provider: aws-kms, key_id: '{COM_KEY}'}}")
    assert "partition aws is not" in refused(p)["keys.key_id"]


def test_bare_key_id_needs_a_region(tmp_path: Path) -> None:
    p = plan(tmp_path, S3_GOV, "{provider: aws-kms, key_id: alias/migration}")
    assert "unknown" in refused(p)["keys.key_id"]
    p = plan(
        tmp_path, S3_GOV, "{provider: aws-kms, key_id: alias/migration, region: us-gov-east-1}"
    )
    assert refused(p) == {}


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://storage.example.com",  # a foreign endpoint
        "https://s3.us-east-1.amazonaws.com",  # commercial, under a gov region name
        "http://s3.us-gov-west-1.amazonaws.com",  # not https
    ],
)
def test_foreign_endpoint_refused(tmp_path: Path, endpoint: str) -> None:
    dest = f"{{kind: s3, bucket: bucket-gov, region: us-gov-west-1, endpoint_url: '{endpoint}'}}"
    assert "destination.endpoint_url" in refused(plan(tmp_path, dest, KMS_GOV))


def test_loopback_only_with_the_test_flag(tmp_path: Path) -> None:
    dest = "{kind: s3, bucket: bucket-gov, region: us-gov-west-1, endpoint_url: 'http://127.0.0.1:9000'}"
    p = plan(tmp_path, dest, KMS_GOV)
    assert "--allow-loopback" in refused(p)["destination.endpoint_url"]
    assert refused(p, allow_loopback=True) == {}


def test_azure_commercial_account_refused(tmp_path: Path) -> None:
    keys = (
        "{provider: azure-keyvault, vault_url: 'https://v.vault.usgovcloudapi.net/', key_name: k}"
    )
    gov = "{kind: azure, bucket: container-gov, account_url: 'https://acct.blob.core.usgovcloudapi.net'}"
    com = "{kind: azure, bucket: container-gov, account_url: 'https://acct.blob.core.windows.net'}"
    assert refused(plan(tmp_path, gov, keys)) == {}
    assert "AzureCloud" in refused(plan(tmp_path, com, keys))["destination.account_url"]
    com_vault = "{provider: azure-keyvault, vault_url: 'https://v.vault.azure.net/', key_name: k}"
    assert "keys.vault_url" in refused(plan(tmp_path, gov, com_vault))


def test_local_destination_needs_the_test_flag(tmp_path: Path) -> None:
    p = plan(tmp_path, "{kind: local, path: dest}", "{provider: local, kek_file: k.key}")
    assert "destination.path" in refused(p)
    assert refused(p, allow_loopback=True) == {}


def test_no_policy_no_checks(tmp_path: Path) -> None:
    p = plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV, residency="")
    assert check_residency(p) == []


def test_cli_plan_and_run_refuse_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV)
    for command in ("plan", "run"):
        result = run_cli(command, "plan.yaml", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "destination.region" in result.stderr and "residency" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()

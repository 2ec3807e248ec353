"""Residency refusals: nothing outside the allowed clouds; endpoints read as the SDKs read them,
the clients connect where the checks looked, and FIPS mode."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from urllib3.util import parse_url

import migrator.residency.fips
from migrator.cli import main
from migrator.plan.model import Plan, load_plan
from migrator.residency import (
    EndpointRefused,
    ResidencyError,
    check_residency,
    crypto_backend,
    enforce_residency,
    loopback_allowed,
    parse_endpoint,
)
from migrator.residency.environment import BlobEndpoints, ConnectionStringError, blob_endpoints
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
        "{provider: azure-keyvault, vault_url: 'https://gov-kv.vault.usgovcloudapi.net/',"
        " key_name: k}"
    )
    gov = "{kind: azure, bucket: container-gov, account_url: 'https://acct.blob.core.usgovcloudapi.net'}"
    com = "{kind: azure, bucket: container-gov, account_url: 'https://acct.blob.core.windows.net'}"
    assert refused(plan(tmp_path, gov, keys)) == {}
    assert "AzureCloud" in refused(plan(tmp_path, com, keys))["destination.account_url"]
    com_vault = (
        "{provider: azure-keyvault, vault_url: 'https://gov-kv.vault.azure.net/', key_name: k}"
    )
    assert "keys.vault_url" in refused(plan(tmp_path, gov, com_vault))


def test_local_destination_needs_the_test_flag(tmp_path: Path) -> None:
    p = plan(tmp_path, "{kind: local, path: dest}", "{provider: local, kek_file: k.key}")
    assert "destination.path" in refused(p)
    assert refused(p, allow_loopback=True) == {}


def test_a_cloud_plan_without_a_policy_is_refused(tmp_path: Path) -> None:
    """Issue 13 changes this: a plan with no `residency` was not checked at all."""
    p = plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV, residency="")
    assert "allow_any" in refused(p)["residency"]
    anything = "residency: {allow_any: true}"
    p = plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV, anything)
    assert [(c.field, c.allowed) for c in check_residency(p)] == [("residency.allow_any", True)]


def test_a_local_plan_needs_no_policy(tmp_path: Path) -> None:
    p = plan(tmp_path, "{kind: local, path: dest}", "{provider: local, kek_file: k.key}", "")
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


# --- endpoints read as the SDK reads them ---------------------------------------------------


def test_the_sdk_parsers_really_disagree_on_a_backslash_before_userinfo() -> None:
    """Why one parser is not enough: urllib.parse and urllib3 (botocore, requests) name
    different hosts for the same string, so the checks refuse what they disagree on."""
    url = "https://evil.example\\@s3-fips.us-gov-west-1.amazonaws.com"
    assert urlsplit(url).hostname == "s3-fips.us-gov-west-1.amazonaws.com"
    assert parse_url(url).host == "evil.example"
    with pytest.raises(EndpointRefused, match="parsers disagree"):
        parse_endpoint(url)


@pytest.mark.parametrize(
    ("url", "host", "loopback"),
    [
        (
            "https://s3-fips.us-gov-west-1.amazonaws.com",
            "s3-fips.us-gov-west-1.amazonaws.com",
            False,
        ),
        ("https://S3.US-GOV-WEST-1.AMAZONAWS.COM:443/", "s3.us-gov-west-1.amazonaws.com", False),
        ("http://127.0.0.1:5000", "127.0.0.1", True),
        ("http://localhost:10000/devstoreaccount1", "localhost", True),
        ("http://[::1]:8080/account", "::1", True),
    ],
)
def test_plain_endpoints_parse(url: str, host: str, loopback: bool) -> None:
    endpoint = parse_endpoint(url)
    assert (endpoint.host, endpoint.loopback) == (host, loopback)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://a.example@b.example", "userinfo"),
        ("https://b.example%2ea.example", "percent"),
        ("https://b.example/x", "path"),
        ("https://b.example:8443", "port"),
        ("http://b.example", "scheme"),
        ("https://b.example.", "trailing dot"),
        ("https://10.1.2.3", "IP address"),
        ("https://[2001:db8::1]", "IP address"),
        ("https://2130706433", "numeric"),
        ("https://0x7f.1", "numeric"),
        ("https://b.example\x7f", "printable"),
        ("https://b_c.example", "DNS label"),
        ("http://127.0.0.1:5000?x=1", "query"),
        ("http://127.0.0.1:5000/a b", "printable"),
    ],
)
def test_endpoint_tricks_are_refused_with_a_reason(url: str, why: str) -> None:
    with pytest.raises(EndpointRefused, match=why):
        parse_endpoint(url)


CONNECTION_STRINGS = [
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.usgovcloudapi.net",
    "AccountName=acct;AccountKey=a2V5",
    "AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.usgovcloudapi.net",
    "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net;",
    "BlobEndpoint=https://acct.blob.core.usgovcloudapi.net;SharedAccessSignature=sv=1&sig=x",
    "BlobEndpoint=https://a.example;BlobSecondaryEndpoint=https://b.example;AccountKey=a2V5",
    "blobendpoint=https://a.example;BLOBENDPOINT=https://b.example",
    "UseDevelopmentStorage=true",
    "AccountKey=a2V5;BlobEndpoint",
    "BlobSecondaryEndpoint=https://b.example",
    "AccountKey=a2V5",
]


@pytest.mark.parametrize("text", CONNECTION_STRINGS)
def test_connection_strings_name_the_endpoints_the_sdk_uses(text: str) -> None:
    """The same primary and secondary endpoint as azure-storage-blob's own parser, or a
    refusal wherever it refuses."""
    from azure.storage.blob._shared.base_client import parse_connection_str

    try:
        primary, secondary, _ = parse_connection_str(text, None, "blob")
    except ValueError:
        with pytest.raises(ConnectionStringError):
            blob_endpoints(text)
        return
    assert blob_endpoints(text) == BlobEndpoints(primary, secondary)


# --- the clients connect where the checks looked ------------------------------------------


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@pytest.mark.usefixtures("no_aws_config")
def test_clients_ignore_botocore_endpoint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL_S3 / _KMS redirect a default boto3 client even with FIPS on; the
    destination's and the KEK's clients take the plan's endpoint or the region's only."""
    from migrator.keys.aws_kms import AwsKmsKeyProvider
    from migrator.stores.s3_config import S3ClientSettings, build_s3_client

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.setenv(name, "https://evil.example")
    s3 = build_s3_client(S3ClientSettings(region="us-gov-west-1"))
    assert s3.meta.endpoint_url == "https://s3-fips.us-gov-west-1.amazonaws.com"
    kms = AwsKmsKeyProvider(GOV_KEY).client
    assert kms.meta.endpoint_url == "https://kms-fips.us-gov-west-1.amazonaws.com"


class _Sent(Exception):
    """Stops a request before it leaves, once its URL is recorded."""


def _request_host(client: Any, call: Callable[[], object]) -> str:
    """The host the client's next request would go to (it is stopped before sending)."""
    hosts: list[str] = []

    def record(request: Any, **kwargs: object) -> None:
        hosts.append(urlsplit(request.url).hostname or "")
        raise _Sent

    client.meta.events.register_first("before-send", record)
    with pytest.raises(_Sent):
        call()
    return hosts[0]


@pytest.mark.usefixtures("no_aws_config")
def test_fips_required_forces_fips_endpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside GovCloud FIPS endpoints are off by default; `fips: required` turns them on."""
    from migrator.stores.s3 import S3Store
    from migrator.wiring import open_key_provider, open_store

    monkeypatch.setattr(migrator.residency.fips, "fips_gaps", list)
    p = plan(
        tmp_path,
        "{kind: s3, bucket: bucket-com, region: us-east-2}",
        f"{{provider: aws-kms, key_id: '{COM_KEY}', signing_key_id: alias/signing}}",
        "residency: {aws_partitions: [aws]}\nfips: required",
    )
    store = open_store(p)
    assert isinstance(store, S3Store)
    client = store.client
    host = _request_host(client, lambda: client.head_object(Bucket="bucket-com", Key="k"))
    assert host in ("s3-fips.us-east-2.amazonaws.com", "bucket-com.s3-fips.us-east-2.amazonaws.com")
    kms = open_key_provider(p).client  # type: ignore[attr-defined]
    host = _request_host(kms, lambda: kms.list_keys())
    assert host == "kms-fips.us-east-1.amazonaws.com"


def test_fips_required_refuses_a_backend_outside_fips_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both OpenSSLs count: cryptography's (every seal) and Python's (TLS to each endpoint)."""
    p = plan(tmp_path, S3_GOV, KMS_GOV, f"{RESIDENCY}\nfips: required")
    for crypto_on, tls_on in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(migrator.residency.fips, "cryptography_fips", lambda v=crypto_on: v)
        monkeypatch.setattr(migrator.residency.fips, "interpreter_fips", lambda v=tls_on: v)
        with pytest.raises(ResidencyError) as err:
            enforce_residency(p)
        assert err.value.field == "fips" and "deploy/README.md" in str(err.value)
        assert ("cryptography's OpenSSL" in str(err.value)) is not crypto_on
        assert ("Python's ssl" in str(err.value)) is not tls_on
    monkeypatch.setattr(migrator.residency.fips, "interpreter_fips", lambda: True)
    monkeypatch.setattr(migrator.residency.fips, "cryptography_fips", lambda: True)
    assert [c.allowed for c in enforce_residency(p) if c.field == "fips"] == [True]


# --- every way in refuses: the library's wiring, the Dagster target, the CLI flag ---------


def test_wiring_refuses_before_opening_anything(tmp_path: Path) -> None:
    """A caller that skips the CLI still meets the checks where stores and keys are opened."""
    from migrator.wiring import open_existing_state, open_key_provider, open_state, open_store

    p = plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV)
    for opener in (open_store, open_key_provider, open_state, open_existing_state):
        with pytest.raises(ResidencyError, match=r"destination\.region"):
            opener(p)
    assert not (tmp_path / "state").exists()


def test_the_dagster_target_fails_at_once(tmp_path: Path) -> None:
    from dagster import Failure

    from pipelines.resources import CloudTarget

    p = plan(tmp_path, "{kind: s3, bucket: bucket-com, region: us-east-1}", KMS_GOV)
    with pytest.raises(Failure) as err, CloudTarget().open(p):
        pass
    assert err.value.allow_retries is False and "destination.region" in str(err.value)


def test_allow_loopback_flag_reaches_every_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = (
        "{kind: s3, bucket: bucket-gov, region: us-gov-west-1, endpoint_url: 'http://127.0.0.1:9'}"
    )
    p = plan(tmp_path, dest, KMS_GOV)
    assert loopback_allowed(p).residency.allow_loopback  # type: ignore[union-attr]
    (tmp_path / "data").mkdir()
    for flag, code in (([], 2), (["--allow-loopback"], 0)):
        with pytest.raises(SystemExit) as exit_:
            main(["plan", str(p.plan_path), *flag])
        assert exit_.value.code == code, capsys.readouterr()


def test_crypto_names_the_backend_and_its_fips_mode(capsys: pytest.CaptureFixture[str]) -> None:
    backend = crypto_backend()
    assert backend.openssl.startswith("OpenSSL") and backend.library.startswith("cryptography")
    assert backend.algorithms["AES-256-GCM"] and backend.algorithms["HKDF-SHA256"]
    with pytest.raises(SystemExit) as exit_:
        main(["crypto"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and backend.openssl in out and "FIPS mode" in out
    if not (backend.fips and backend.tls_fips):
        assert "deploy/README.md" in out
    with pytest.raises(SystemExit):
        main(["crypto", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["fips"] is backend.fips and doc["openssl"] == backend.openssl
    assert doc["tls_fips"] is backend.tls_fips and doc["tls"] == ssl.OPENSSL_VERSION


MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_plan_has_a_policy_its_endpoints_pass(path: Path) -> None:
    example = load_plan(path, check_sources=False)
    assert example.residency is not None and not example.residency.allow_any
    checks = enforce_residency(example)
    assert checks and all(c.allowed for c in checks)

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config

from migrator.demo.motoserver import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, MotoServer
from migrator.errors import KeyProviderError, WrongKeyError
from migrator.keys.arn import KmsArn, parse_kms_arn, partition_of_region
from migrator.keys.aws_kms import MAX_ATTEMPTS, AwsKmsKeyProvider
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import key_context
from migrator.keys.provider import WrappedKey
from tests.faultproxy import FaultProxy

REGION = "us-east-1"
CONTEXT = key_context("plan-1", "profiles")
integration = pytest.mark.integration


def kms_client(endpoint_url: str, *, max_attempts: int | None = None) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        region_name=REGION,
    )
    retries: Any = {"mode": "standard", "total_max_attempts": max_attempts or MAX_ATTEMPTS}
    return session.client("kms", endpoint_url=endpoint_url, config=Config(retries=retries))


@pytest.fixture
def kms(moto_server: MotoServer) -> Any:
    return kms_client(moto_server.endpoint_url)


@pytest.fixture
def key_arn(kms: Any) -> str:
    return str(kms.create_key(Description="migrator test KEK")["KeyMetadata"]["Arn"])


@pytest.fixture
def other_key_arn(kms: Any) -> str:
    return str(kms.create_key(Description="another KEK")["KeyMetadata"]["Arn"])


@pytest.fixture
def provider(key_arn: str, moto_server: MotoServer) -> AwsKmsKeyProvider:
    return AwsKmsKeyProvider(key_arn, region=REGION, endpoint_url=moto_server.endpoint_url)


def kms_error(
    client: Any, operation: str, code: str, message: str, *, times: int = -1
) -> list[int]:
    """Answer `operation` with KMS's JSON error `code` before the request is sent.

    Moto does not enforce key states or throttle, so these answers stand in for what KMS
    returns; botocore still parses them (and retries them) exactly as real responses.
    """
    calls: list[int] = []

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        calls.append(1)
        if 0 <= times < len(calls):
            return None  # let moto answer from now on
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.1"
        return AWSResponse(request.url, 400, headers, _Body(body))

    client.meta.events.register(f"before-send.kms.{operation}", answer)
    return calls


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def secret_forms(key: DataKey) -> list[str]:
    return [key.secret.hex(), repr(key.secret), base64.b64encode(key.secret).decode()]


# --- against the moto server ----------------------------------------------------------------


@integration
def test_round_trip(provider: AwsKmsKeyProvider, key_arn: str) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)

    assert wrapped.provider == "aws-kms"
    assert wrapped.kek_id == key_arn
    assert wrapped.key_id == key.key_id.hex()
    assert wrapped.context == CONTEXT
    assert key.secret not in wrapped.ciphertext
    stored = WrappedKey.from_json(wrapped.to_json())
    assert provider.unwrap(stored) == key


@integration
def test_encryption_context_is_sent_to_kms(
    provider: AwsKmsKeyProvider, kms: Any, key_arn: str
) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)

    # KMS itself needs the same context back: the wrap is bound to it, not just recorded.
    plain = kms.decrypt(CiphertextBlob=wrapped.ciphertext, EncryptionContext=CONTEXT)
    assert plain["Plaintext"] == key.secret
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=wrapped.ciphertext)


@integration
@pytest.mark.parametrize(
    "context",
    [
        {**CONTEXT, "migrator:dataset": "videos"},
        {"migrator:plan": "plan-1"},
        {**CONTEXT, "extra": "x"},
    ],
    ids=["changed", "dropped", "added"],
)
def test_edited_context_is_a_wrong_key(
    provider: AwsKmsKeyProvider, context: dict[str, str]
) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match="InvalidCiphertextException"):
        provider.unwrap(dataclasses.replace(wrapped, context=context))


@integration
def test_altered_ciphertext_is_a_wrong_key(provider: AwsKmsKeyProvider, key_arn: str) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)
    blob = bytearray(wrapped.ciphertext)
    blob[-1] ^= 1

    with pytest.raises(WrongKeyError, match=key_arn):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(blob)))


@integration
def test_recorded_key_id_must_match(provider: AwsKmsKeyProvider) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match="recorded key id"):
        provider.unwrap(dataclasses.replace(wrapped, key_id="00" * 16))


@integration
def test_key_from_another_kms_key_is_a_wrong_key(
    provider: AwsKmsKeyProvider, moto_server: MotoServer, key_arn: str, other_key_arn: str
) -> None:
    other = AwsKmsKeyProvider(other_key_arn, endpoint_url=moto_server.endpoint_url)
    _, wrapped = other.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError) as recorded:
        provider.unwrap(wrapped)
    assert other_key_arn in str(recorded.value)
    assert key_arn in str(recorded.value)


@integration
def test_forged_kek_id_is_refused_by_kms(
    provider: AwsKmsKeyProvider, moto_server: MotoServer, key_arn: str, other_key_arn: str
) -> None:
    # The record claims the plan's key, so only KMS can tell: Decrypt names the plan's key.
    other = AwsKmsKeyProvider(other_key_arn, endpoint_url=moto_server.endpoint_url)
    _, wrapped = other.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match=key_arn):
        provider.unwrap(dataclasses.replace(wrapped, kek_id=key_arn))


@integration
def test_alias_generates_under_its_key_and_refuses_other_keys(
    kms: Any, moto_server: MotoServer, key_arn: str, other_key_arn: str
) -> None:
    alias = f"alias/migrator-{uuid.uuid4().hex}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_arn)
    provider = AwsKmsKeyProvider(alias, endpoint_url=moto_server.endpoint_url)

    key, wrapped = provider.generate_data_key(CONTEXT)
    assert wrapped.kek_id == key_arn  # the key KMS used, not the alias that may move later
    assert provider.unwrap(wrapped) == key
    assert provider.describe() == f"aws-kms {alias}"

    other = AwsKmsKeyProvider(other_key_arn, endpoint_url=moto_server.endpoint_url)
    _, foreign = other.generate_data_key(CONTEXT)
    with pytest.raises(WrongKeyError, match=alias):
        provider.unwrap(foreign)


@integration
def test_wrapped_by_another_provider_is_a_wrong_key(provider: AwsKmsKeyProvider) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match="'local'"):
        provider.unwrap(dataclasses.replace(wrapped, provider="local"))


@integration
def test_disabled_key_is_a_provider_error(kms: Any, moto_server: MotoServer, key_arn: str) -> None:
    provider = AwsKmsKeyProvider(key_arn, client=kms_client(moto_server.endpoint_url))
    _, wrapped = provider.generate_data_key(CONTEXT)
    kms.disable_key(KeyId=key_arn.rsplit("/", 1)[1])  # moto takes only the bare id here
    message = f"{key_arn} is disabled."
    kms_error(provider.client, "GenerateDataKey", "DisabledException", message)
    kms_error(provider.client, "Decrypt", "DisabledException", message)

    with pytest.raises(KeyProviderError, match="DisabledException") as generating:
        provider.generate_data_key(CONTEXT)
    with pytest.raises(KeyProviderError, match="DisabledException") as unwrapping:
        provider.unwrap(wrapped)
    for error in (generating.value, unwrapping.value):
        assert not isinstance(error, WrongKeyError)
        assert key_arn in str(error)
        assert "enable it" in str(error)


@integration
def test_unknown_key_is_a_provider_error(moto_server: MotoServer, kms: Any) -> None:
    missing = f"arn:aws:kms:{REGION}:123456789012:key/{uuid.uuid4()}"
    provider = AwsKmsKeyProvider(missing, endpoint_url=moto_server.endpoint_url)

    with pytest.raises(KeyProviderError, match="NotFoundException") as recorded:
        provider.generate_data_key(CONTEXT)
    assert missing in str(recorded.value)


@integration
def test_throttling_is_retried(provider: AwsKmsKeyProvider) -> None:
    calls = kms_error(
        provider.client, "GenerateDataKey", "ThrottlingException", "Rate exceeded", times=1
    )

    key, wrapped = provider.generate_data_key(CONTEXT)
    assert len(calls) == 2
    assert provider.unwrap(wrapped) == key


@integration
def test_throttling_after_retries_is_a_provider_error(
    moto_server: MotoServer, key_arn: str
) -> None:
    client = kms_client(moto_server.endpoint_url, max_attempts=2)
    provider = AwsKmsKeyProvider(key_arn, client=client)
    calls = kms_error(client, "GenerateDataKey", "ThrottlingException", "Rate exceeded")

    with pytest.raises(KeyProviderError, match="ThrottlingException: Rate exceeded"):
        provider.generate_data_key(CONTEXT)
    assert len(calls) == 2


@integration
def test_network_failure_is_a_provider_error(key_arn: str) -> None:
    # Port 9 (discard) on 127.0.0.1: nothing listens, the connection is refused at once.
    client = boto3.session.Session(region_name=REGION).client(
        "kms",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2),
    )
    provider = AwsKmsKeyProvider(key_arn, client=client)

    with pytest.raises(KeyProviderError, match="EndpointConnectionError") as recorded:
        provider.generate_data_key(CONTEXT)
    assert key_arn in str(recorded.value)


@integration
def test_no_secret_in_repr_str_or_errors(provider: AwsKmsKeyProvider) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)
    texts = [repr(key), str(key), repr(provider), str(provider), provider.describe()]
    texts.append(repr(wrapped))
    texts.append(wrapped.to_json().decode())
    for bad in (
        dataclasses.replace(wrapped, context={"migrator:plan": "other"}),
        dataclasses.replace(wrapped, key_id="00" * 16),
        dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext[:-1]),
    ):
        with pytest.raises(WrongKeyError) as recorded:
            provider.unwrap(bad)
        texts.append(str(recorded.value))
        texts.append(repr(recorded.value))

    for text in texts:
        for form in secret_forms(key):
            assert form not in text


# --- client construction: no requests ----------------------------------------------------------


@pytest.fixture
def no_fips_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_USE_FIPS_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))


GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.usefixtures("no_fips_from_env")
def test_govcloud_region_uses_the_fips_endpoint() -> None:
    provider = AwsKmsKeyProvider(GOV_KEY, region="us-gov-west-1")
    assert provider.client.meta.endpoint_url == "https://kms-fips.us-gov-west-1.amazonaws.com"
    assert provider.client.meta.config.retries["mode"] == "standard"
    assert provider.client.meta.config.retries["total_max_attempts"] == MAX_ATTEMPTS


@pytest.mark.usefixtures("no_fips_from_env")
def test_region_comes_from_the_key_arn() -> None:
    provider = AwsKmsKeyProvider(GOV_KEY)
    assert provider.client.meta.region_name == "us-gov-west-1"
    assert provider.client.meta.endpoint_url == "https://kms-fips.us-gov-west-1.amazonaws.com"


@pytest.mark.usefixtures("no_fips_from_env")
def test_fips_can_be_turned_off_and_is_off_elsewhere() -> None:
    gov = AwsKmsKeyProvider(GOV_KEY, use_fips=False)
    assert gov.client.meta.endpoint_url == "https://kms.us-gov-west-1.amazonaws.com"
    commercial = AwsKmsKeyProvider("alias/migrator", region="us-east-1")
    assert commercial.client.meta.endpoint_url == "https://kms.us-east-1.amazonaws.com"


@pytest.mark.usefixtures("no_fips_from_env")
def test_explicit_endpoint_is_used_as_is() -> None:
    provider = AwsKmsKeyProvider(GOV_KEY, endpoint_url="http://127.0.0.1:4566")
    assert provider.client.meta.endpoint_url == "http://127.0.0.1:4566"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="us-gov-west-1, not in us-gov-east-1"):
        AwsKmsKeyProvider(GOV_KEY, region="us-gov-east-1")
    with pytest.raises(ValueError, match="exclude each other"):
        AwsKmsKeyProvider(GOV_KEY, endpoint_url="http://127.0.0.1:1", use_fips=True)
    with pytest.raises(ValueError, match="not a KMS key reference"):
        AwsKmsKeyProvider("my-key")


def test_no_region_is_a_provider_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))

    with pytest.raises(KeyProviderError, match="region"):
        AwsKmsKeyProvider("alias/migrator")


# --- arn.py ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("us-gov-west-1", "aws-us-gov"),
        ("us-gov-east-1", "aws-us-gov"),
        ("cn-north-1", "aws-cn"),
        ("us-iso-east-1", "aws-iso"),
        ("us-isob-east-1", "aws-iso-b"),
        ("us-east-1", "aws"),
        ("eu-central-1", "aws"),
    ],
)
def test_partition_of_region(region: str, partition: str) -> None:
    assert partition_of_region(region) == partition


@pytest.mark.parametrize("region", ["", "us-gov-west", "US-EAST-1", "us_east_1"])
def test_partition_of_bad_region(region: str) -> None:
    with pytest.raises(ValueError, match="not an AWS region name"):
        partition_of_region(region)


def test_parse_key_and_alias_arns() -> None:
    assert parse_kms_arn(GOV_KEY) == KmsArn(
        "aws-us-gov", "us-gov-west-1", "123456789012", "key", "1234abcd-12ab-34cd-56ef-1234567890ab"
    )
    alias = parse_kms_arn("arn:aws:kms:us-east-1:123456789012:alias/team/migrator")
    assert alias == KmsArn("aws", "us-east-1", "123456789012", "alias", "team/migrator")
    assert str(alias) == "arn:aws:kms:us-east-1:123456789012:alias/team/migrator"
    mrk = parse_kms_arn("arn:aws:kms:us-east-1:123456789012:key/mrk-" + "a" * 32)
    assert mrk is not None and mrk.resource_id == "mrk-" + "a" * 32


@pytest.mark.parametrize(
    "value", ["1234abcd-12ab-34cd-56ef-1234567890ab", "alias/migrator", "mrk-" + "0" * 32]
)
def test_bare_ids_and_aliases_have_no_partition(value: str) -> None:
    assert parse_kms_arn(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("my-key", "not a KMS key reference"),
        ("arn:aws:kms:us-east-1:123456789012", "not a KMS ARN"),
        ("arn:aws:s3:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", "'s3'"),
        ("arn:aws:kms:us-gov-west-1:123456789012:alias/x", "lies in partition 'aws-us-gov'"),
        ("arn:aws-xx:kms:us-east-1:123456789012:alias/x", "unknown partition"),
        ("arn:aws:kms:us-east-1:1234:alias/x", "not 12 digits"),
        ("arn:aws:kms:us-east-1:123456789012:key/not-a-uuid", "neither"),
        ("arn:aws:kms:nowhere:123456789012:alias/x", "not an AWS region name"),
    ],
)
def test_bad_arns_say_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_kms_arn(value)


@pytest.mark.parametrize("operation", ["GenerateDataKey", "Encrypt", "Decrypt"])
def test_an_answer_cut_short_is_asked_again(
    key_arn: str, s3_proxy: FaultProxy, operation: str
) -> None:
    """botocore parses a KMS answer cut short as an empty success: the provider asks again
    instead of failing on a missing field (or, for Encrypt, on a bare KeyError)."""
    provider = AwsKmsKeyProvider(key_arn, region=REGION, endpoint_url=s3_proxy.url)
    context = key_context("plan", "ds")
    key, wrapped = provider.generate_data_key(context)
    target = f"TrentService.{operation}"
    s3_proxy.cut_response_next(2, match=lambda r: r.headers.get("x-amz-target") == target)
    if operation == "GenerateDataKey":
        again, _ = provider.generate_data_key(context)
        assert len(again.secret) == 32
    elif operation == "Encrypt":
        rewrapped = provider.wrap(key, context)
        assert provider.unwrap(rewrapped) == key
    else:
        assert provider.unwrap(wrapped) == key
    assert [kind for kind, _ in s3_proxy.injected] == ["cut", "cut"]


def test_answers_cut_short_every_time_stop_naming_the_operation(
    key_arn: str, s3_proxy: FaultProxy
) -> None:
    provider = AwsKmsKeyProvider(key_arn, region=REGION, endpoint_url=s3_proxy.url)
    _, wrapped = provider.generate_data_key(key_context("plan", "ds"))
    s3_proxy.cut_response_next(100, match=lambda r: "Decrypt" in r.headers.get("x-amz-target", ""))
    with pytest.raises(KeyProviderError, match=r"Decrypt answered without Plaintext 4 times"):
        provider.unwrap(wrapped)

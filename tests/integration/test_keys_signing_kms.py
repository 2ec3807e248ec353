"""The plan's signing key in KMS (moto on 127.0.0.1), and the attacks it stops.

A KMS principal that may only Encrypt with the KEK plants a keyring entry: refused by name,
reported by verify and audit. A principal that may Decrypt (it holds every data key) but not
Sign cannot forge a ledger segment that audit accepts, with the KEK or with the exported audit
key alone. An object planted after `keys rotate --new-data-key` with the retired key's id in
its metadata chooses no key. moto enforces IAM policies on KMS calls inside
`moto_authorization`, so the principals are real IAM users with real policies.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from migrator.codec.chunk import read_header
from migrator.demo.motoserver import MotoServer
from migrator.errors import KeyProviderError
from migrator.keys.aws_kms import AwsKmsKeyProvider
from migrator.keys.aws_kms_signing import AwsKmsSigner
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import key_context, load_keyring
from migrator.keys.local_signing import MemorySigner
from migrator.keys.provider import WrappedKey
from migrator.keys.signing import sign_checked
from migrator.repository.keyrings import read_keyring
from tests.e2e.test_bad_input_matrix import moto_authorization
from tests.e2e.test_key_rotation import NAMES, migrated, rotate
from tests.e2e.test_planted_keys import (
    assert_planted_key_refused,
    audit_report,
    exported_audit_keys,
    forge_segment,
    found,
    plant_keyring,
    verify_problems,
)
from tests.integration.test_keys_aws_kms import REGION, kms_client

integration = pytest.mark.integration
SIGN_DENIED = r"(?s)Sign failed: .*not authorized to perform: kms:Sign\b"


@pytest.fixture
def kms(moto_server: MotoServer) -> Any:
    return kms_client(moto_server.endpoint_url)


def kms_key(kms: Any, **spec: str) -> str:
    return str(kms.create_key(Description="migrator signing test", **spec)["KeyMetadata"]["Arn"])


def signing_key(kms: Any) -> str:
    return kms_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")


@pytest.fixture
def keys(kms: Any, moto_server: MotoServer) -> AwsKmsKeyProvider:
    """The owner's KEK and signing key."""
    return AwsKmsKeyProvider(
        kms_key(kms),
        region=REGION,
        endpoint_url=moto_server.endpoint_url,
        signing_key_id=signing_key(kms),
    )


@pytest.fixture
def principal(moto_server: MotoServer) -> Any:
    """make(actions): a KMS client of a new IAM user whose policy allows only `actions`. moto
    checks its calls against that policy inside `moto_authorization` (the owner, who has no
    IAM user in moto, makes its calls outside)."""
    url = moto_server.endpoint_url
    iam = boto3.client("iam", endpoint_url=url, region_name=REGION)

    def make(actions: list[str]) -> Any:
        user = f"principal-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="kms", PolicyDocument=json.dumps(policy))
        access = iam.create_access_key(UserName=user)["AccessKey"]
        session = boto3.session.Session(
            aws_access_key_id=access["AccessKeyId"],
            aws_secret_access_key=access["SecretAccessKey"],
            region_name=REGION,
        )
        return session.client("kms", endpoint_url=url)

    return make


@integration
def test_kms_signs_and_its_verify_agrees(kms: Any, keys: AwsKmsKeyProvider) -> None:
    """The stored form (r || s over the raw message) is what KMS itself verifies."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    message = b"migrator/v2/keyring\n" + bytes(32)
    key_id, signature = sign_checked(keys.signer, message)
    public = keys.signer.public_key()
    assert key_id == public.key_id and public.source.startswith("aws-kms ")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    assert isinstance(keys.signer, AwsKmsSigner)
    answer = kms.verify(
        KeyId=keys.signer.key_id,
        Message=message,
        MessageType="RAW",
        Signature=der,
        SigningAlgorithm="ECDSA_SHA_256",
    )
    assert answer["SignatureValid"] is True


@integration
@pytest.mark.parametrize(
    "spec",
    [{}, {"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"}],
    ids=["symmetric", "rsa"],
)
def test_a_signing_key_that_is_not_ecc_p256_is_refused(
    kms: Any, moto_server: MotoServer, spec: dict[str, str]
) -> None:
    wrong = kms_key(kms, **spec)
    provider = AwsKmsKeyProvider(
        kms_key(kms), region=REGION, endpoint_url=moto_server.endpoint_url, signing_key_id=wrong
    )
    with pytest.raises(KeyProviderError, match="must be an asymmetric ECC_NIST_P256") as err:
        provider.signer.sign(b"m")
    assert wrong in str(err.value)


@integration
def test_a_plan_without_a_signing_key_says_which_field_to_set(
    kms: Any, moto_server: MotoServer
) -> None:
    provider = AwsKmsKeyProvider(kms_key(kms), region=REGION, endpoint_url=moto_server.endpoint_url)
    with pytest.raises(KeyProviderError, match=r"keys\.signing_key_id is not set"):
        provider.signer.public_key()


@integration
@pytest.mark.parametrize("signed", ["copied signature", "own signing key"])
def test_a_keyring_entry_from_an_encrypt_only_principal_is_refused(
    tmp_path: Path, moto_server: MotoServer, keys: AwsKmsKeyProvider, principal: Any, signed: str
) -> None:
    _, site, _ = migrated(tmp_path, syncs=0, provider=keys)
    # May wrap under the plan's KEK and read public keys, nothing else.
    encrypter = principal(["kms:Encrypt", "kms:GetPublicKey"])
    context = key_context(site.plan.name, "profiles")
    secret = bytes(range(32))
    assert isinstance(keys.signer, AwsKmsSigner)
    with moto_authorization(moto_server.endpoint_url):
        blob = encrypter.encrypt(KeyId=keys.key_id, Plaintext=secret, EncryptionContext=context)
        with pytest.raises(KeyProviderError, match=SIGN_DENIED):
            AwsKmsSigner(keys.signer.key_id, encrypter).sign(b"a keyring")
    planted = WrappedKey(
        "aws-kms", blob["KeyId"], DataKey(secret).key_id.hex(), blob["CiphertextBlob"], context
    )
    assert keys.unwrap(planted).secret == secret  # KMS itself opens it: a valid wrap
    signer = MemorySigner.generate() if signed == "own signing key" else None
    okey, key_id = plant_keyring(site.store, site.plan.name, "profiles", planted, signer=signer)
    assert_planted_key_refused(site, okey, key_id)


@integration
@pytest.mark.parametrize("how", ["own signing key", "claims the plan's key"])
def test_a_principal_that_can_decrypt_but_not_sign_cannot_forge_a_segment(
    tmp_path: Path, moto_server: MotoServer, keys: AwsKmsKeyProvider, principal: Any, how: str
) -> None:
    _, site, _ = migrated(tmp_path, syncs=0, provider=keys)
    audit_keys = exported_audit_keys(site, keys, tmp_path)
    restorer = principal(["kms:Decrypt", "kms:GetPublicKey"])
    assert isinstance(keys.signer, AwsKmsSigner)
    theirs = AwsKmsKeyProvider(
        keys.key_id, region=REGION, client=restorer, signing_key_id=keys.signer.key_id
    )
    with moto_authorization(moto_server.endpoint_url):
        keyring = load_keyring(site.store, theirs, site.plan.name, "profiles")  # every data key
        with pytest.raises(KeyProviderError, match=SIGN_DENIED):
            theirs.signer.sign(b"a segment header")
    key = forge_segment(site, keyring.first, keys.signer.public_key().key_id, how)
    for report in (audit_report(site), audit_report(site, audit_keys)):
        assert key in found(report, "forged")


@integration
def test_a_key_id_in_object_metadata_chooses_nothing_after_a_kms_rotation(
    tmp_path: Path, keys: AwsKmsKeyProvider
) -> None:
    live, site, _ = migrated(tmp_path, provider=keys)
    old = read_keyring(site.store, site.plan.name, "videos").current
    results = {r.dataset: r for r in rotate(site, keys, new_data_key=True)}
    planted = "videos/g000003/s00000/o/planted"
    source = next(o.key for o in site.store.list("videos/g000002/"))
    site.store.put(planted, site.store.get(source), {"migrator-key-id": old})
    live.mutate()
    live.write()
    site.run()
    for name in NAMES:
        sealed = {
            read_header(site.store.get(o.key)).key_id.hex()
            for o in site.store.list(f"{name}/g000003/")
            if o.key != planted
        }
        assert sealed == {results[name].new_key}
    assert (planted, "UnexpectedObjectError") in verify_problems(site)
    assert planted in found(audit_report(site), "extra-object")

"""The plan's signing key in Azure Key Vault, against fakes of the SDK's `KeyClient` (get_key,
list_properties_of_key_versions) and `CryptographyClient.sign`: no Key Vault emulator exists.

The fakes keep an EC P-256 key with versions, sign digests as the service does (ES256, `r || s`),
and answer with the SDK's own result types. The planted-key attack of a Key Vault KEK: anyone
can wrap a data key with the vault key's public RSA key, so a keyring entry wrapped so must be
refused by name, and verify and audit must report it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyProperties, KeyVaultKey
from azure.keyvault.keys.crypto import SignatureAlgorithm, SignResult
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from migrator.errors import KeyProviderError
from migrator.keys.azure_keyvault import AzureKeyVaultKeyProvider, context_tag
from migrator.keys.azure_keyvault_signing import AzureKeyVaultSigner
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import key_context
from migrator.keys.local_signing import MemorySigner
from migrator.keys.provider import WrappedKey
from migrator.keys.signing import raw_signature, sign_checked
from tests.e2e.test_key_rotation import migrated
from tests.e2e.test_planted_keys import assert_planted_key_refused, plant_keyring
from tests.unit.test_keys_azure_keyvault import (
    KEY_NAME,
    KID,
    OAEP,
    VAULT,
    FakeCryptographyClient,
    service_error,
)

SIGNING_KEY = "migrator-signing"


class FakeVaultKey:
    """One vault key's versions, newest last: EC P-256 private keys the fakes sign with."""

    def __init__(self, name: str = SIGNING_KEY) -> None:
        self.name = name
        self.versions: list[tuple[str, ec.EllipticCurvePrivateKey]] = []
        self.rotate()

    def rotate(self) -> None:
        self.versions.append((os.urandom(16).hex(), ec.generate_private_key(ec.SECP256R1())))

    def kid(self, version: str) -> str:
        return f"{VAULT}/keys/{self.name}/{version}"


class FakeKeyClient:
    """`azure.keyvault.keys.KeyClient`'s get_key and list_properties_of_key_versions."""

    def __init__(self, key: FakeVaultKey, *, kty: str = "EC", crv: str = "P-256") -> None:
        self.key = key
        self.kty, self.crv = kty, crv
        self.calls: list[str] = []

    def get_key(self, name: str, version: str | None = None, **kwargs: Any) -> KeyVaultKey:
        self.calls.append(f"get_key {version}")
        found = dict(self.key.versions)
        if name != self.key.name or (version is not None and version not in found):
            raise service_error(ResourceNotFoundError, 404, "Not Found", "KeyNotFound", "No key.")
        version = version or self.key.versions[-1][0]
        numbers = found[version].public_key().public_numbers()
        jwk = {
            "kid": self.key.kid(version),
            "kty": self.kty,
            "crv": self.crv,
            "x": numbers.x.to_bytes(32, "big"),
            "y": numbers.y.to_bytes(32, "big"),
        }
        return KeyVaultKey(self.key.kid(version), jwk=jwk)

    def list_properties_of_key_versions(self, name: str, **kwargs: Any) -> list[KeyProperties]:
        self.calls.append("list_properties_of_key_versions")
        return [KeyProperties(self.key.kid(v)) for v, _ in self.key.versions]


class FakeSigningClient(FakeCryptographyClient):
    """`CryptographyClient.sign` with the newest version: ES256 over the given digest."""

    def __init__(self, key: FakeVaultKey) -> None:
        super().__init__(key.kid(key.versions[-1][0]))
        self.key = key
        self.signed = 0

    def sign(self, algorithm: SignatureAlgorithm, digest: bytes, **kwargs: Any) -> SignResult:
        assert algorithm == SignatureAlgorithm.es256 and len(digest) == 32
        version, private = self.key.versions[-1]
        self.signed += 1
        der = private.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return SignResult(self.key.kid(version), algorithm, raw_signature(der))


def vault_signer(key: FakeVaultKey) -> AzureKeyVaultSigner:
    return AzureKeyVaultSigner(
        VAULT, key.name, crypto_client=FakeSigningClient(key), key_client=FakeKeyClient(key)
    )


def test_signs_with_the_vault_key_and_checks_with_its_public_key() -> None:
    key = FakeVaultKey()
    signer = vault_signer(key)
    key_id, signature = sign_checked(signer, b"a message")
    public = signer.public_key()
    assert key_id == public.key_id and len(signature) == 64
    assert public.source == f"azure-keyvault {key.kid(key.versions[0][0])}"
    assert public.verify(b"a message", signature) and not public.verify(b"another", signature)
    assert signer.describe() == f"azure-keyvault signing key {VAULT}/keys/{SIGNING_KEY}"


def test_an_earlier_version_still_verifies_what_it_signed() -> None:
    key = FakeVaultKey()
    before = vault_signer(key).public_key()
    key.rotate()
    signer = vault_signer(key)
    assert signer.public_key().key_id != before.key_id
    assert signer.public_key_for(before.key_id) == before  # found by listing the versions
    assert signer.public_key_for("0" * 32) is None


@pytest.mark.parametrize(("kty", "crv"), [("RSA", None), ("EC", "P-384")])
def test_a_key_that_is_not_ec_p256_is_refused(kty: str, crv: str | None) -> None:
    key = FakeVaultKey()
    signer = AzureKeyVaultSigner(
        VAULT,
        key.name,
        crypto_client=FakeSigningClient(key),
        key_client=FakeKeyClient(key, kty=kty, crv=str(crv)),
    )
    with pytest.raises(KeyProviderError, match="must be an EC key on P-256") as err:
        signer.sign(b"m")
    assert SIGNING_KEY in str(err.value)


def test_service_errors_are_provider_errors() -> None:
    key = FakeVaultKey()
    forbidden = service_error(
        HttpResponseError, 403, "Forbidden", "Forbidden", "Caller is not authorized to sign."
    )

    class Refusing(FakeSigningClient):
        def sign(self, algorithm: SignatureAlgorithm, digest: bytes, **kwargs: Any) -> SignResult:
            raise forbidden

    signer = AzureKeyVaultSigner(
        VAULT, key.name, crypto_client=Refusing(key), key_client=FakeKeyClient(key)
    )
    with pytest.raises(KeyProviderError, match="sign failed: HttpResponseError HTTP 403"):
        signer.sign(b"m")
    missing = AzureKeyVaultSigner(
        VAULT, "no-such-key", crypto_client=Refusing(key), key_client=FakeKeyClient(key)
    )
    with pytest.raises(KeyProviderError, match="no such key or version"):
        missing.public_key()


def public_rsa_wrap(public: rsa.RSAPublicKey, plan: str, dataset: str) -> WrappedKey:
    """What anyone holding the vault key's public half can make: a data key of their own,
    wrapped exactly as the provider wraps (context tag, then RSA-OAEP-256), no secret needed."""
    key = DataKey(os.urandom(32))
    context = key_context(plan, dataset)
    return WrappedKey(
        "azure-keyvault",
        KID,
        key.key_id.hex(),
        context_tag(key, context) + public.encrypt(key.secret, OAEP),
        context,
    )


@pytest.mark.parametrize("signed", ["copied signature", "own signing key"])
def test_a_keyring_entry_wrapped_with_the_vault_public_key_is_refused(
    tmp_path: Path, signed: str
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vault = AzureKeyVaultKeyProvider(
        VAULT,
        KEY_NAME,
        crypto_client=FakeCryptographyClient(rsa_key=rsa_key),
        signer=vault_signer(FakeVaultKey()),
    )
    _, site, _ = migrated(tmp_path, syncs=0, provider=vault)
    planted = public_rsa_wrap(rsa_key.public_key(), site.plan.name, "videos")
    assert vault.unwrap(planted).key_id.hex() == planted.key_id  # the KEK opens it: it is valid
    signer = MemorySigner.generate() if signed == "own signing key" else None
    okey, key_id = plant_keyring(site.store, site.plan.name, "videos", planted, signer=signer)
    assert_planted_key_refused(site, okey, key_id)

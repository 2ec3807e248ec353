"""Azure Key Vault provider against a fake `CryptographyClient`: no Key Vault emulator exists.

The fake has the SDK's method names, signatures and result types (`WrapResult`,
`UnwrapResult`), wraps with a real RSA key (or AES key wrap for A256KW), and fails the way the
service does: HTTP 400 for bytes the key did not wrap, the SDK's own exception classes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.keys.crypto import KeyWrapAlgorithm, UnwrapResult, WrapResult
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from migrator.errors import KeyProviderError, WrongKeyError
from migrator.keys import azure_keyvault
from migrator.keys.azure_keyvault import AzureKeyVaultKeyProvider
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import key_context
from migrator.keys.provider import WrappedKey

VAULT = "https://migrator-test.vault.usgovcloudapi.net"
KEY_NAME = "migrator-kek"
VERSION = "0123456789abcdef0123456789abcdef"
KID = f"{VAULT}/keys/{KEY_NAME}/{VERSION}"
CONTEXT = key_context("plan-1", "profiles")
OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


class _Response:
    """Just enough of an azure-core response for HttpResponseError to parse Key Vault's body."""

    def __init__(self, status_code: int, reason: str, code: str, message: str) -> None:
        self.status_code = status_code
        self.reason = reason
        self._body = json.dumps({"error": {"code": code, "message": message}})

    def text(self, encoding: str | None = None) -> str:
        return self._body


def service_error(
    cls: type[HttpResponseError], status: int, reason: str, code: str, message: str
) -> HttpResponseError:
    return cls(response=_Response(status, reason, code, message))  # type: ignore[arg-type]


class FakeCryptographyClient:
    """`azure.keyvault.keys.crypto.CryptographyClient`'s wrap/unwrap, on a local key."""

    def __init__(self, key_id: str = KID, *, rsa_key: rsa.RSAPrivateKey | None = None) -> None:
        self._key_id = key_id
        self._rsa = rsa_key
        self._oct = bytes(range(32))
        self.calls: list[tuple[str, KeyWrapAlgorithm]] = []

    @property
    def key_id(self) -> str | None:
        return self._key_id

    def wrap_key(self, algorithm: KeyWrapAlgorithm, key: bytes, **kwargs: Any) -> WrapResult:
        self.calls.append(("wrap_key", algorithm))
        if algorithm == KeyWrapAlgorithm.aes_256:
            encrypted = aes_key_wrap(self._oct, key)
        else:
            assert algorithm == KeyWrapAlgorithm.rsa_oaep_256 and self._rsa is not None
            encrypted = self._rsa.public_key().encrypt(key, OAEP)
        return WrapResult(key_id=self._key_id, algorithm=algorithm, encrypted_key=encrypted)

    def unwrap_key(
        self, algorithm: KeyWrapAlgorithm, encrypted_key: bytes, **kwargs: Any
    ) -> UnwrapResult:
        self.calls.append(("unwrap_key", algorithm))
        try:
            if algorithm == KeyWrapAlgorithm.aes_256:
                key = aes_key_unwrap(self._oct, encrypted_key)
            else:
                assert self._rsa is not None
                key = self._rsa.decrypt(encrypted_key, OAEP)
        except (ValueError, InvalidUnwrap):
            raise service_error(
                HttpResponseError,
                400,
                "Bad Request",
                "BadParameter",
                "Error occurred while decoding OAEP padding.",
            ) from None
        return UnwrapResult(key_id=self._key_id, algorithm=algorithm, key=key)


class FailingCryptographyClient(FakeCryptographyClient):
    """Every call raises `error`, as the SDK would for a service or transport failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self._error = error

    def wrap_key(self, algorithm: KeyWrapAlgorithm, key: bytes, **kwargs: Any) -> WrapResult:
        raise self._error

    def unwrap_key(
        self, algorithm: KeyWrapAlgorithm, encrypted_key: bytes, **kwargs: Any
    ) -> UnwrapResult:
        raise self._error


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(rsa_key: rsa.RSAPrivateKey) -> FakeCryptographyClient:
    return FakeCryptographyClient(rsa_key=rsa_key)


@pytest.fixture
def provider(fake: FakeCryptographyClient) -> AzureKeyVaultKeyProvider:
    return AzureKeyVaultKeyProvider(VAULT, KEY_NAME, crypto_client=fake)


def test_round_trip(provider: AzureKeyVaultKeyProvider, fake: FakeCryptographyClient) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)

    assert wrapped.provider == "azure-keyvault"
    assert wrapped.kek_id == KID  # the versioned id, so a rotated key still unwraps old data
    assert wrapped.key_id == key.key_id.hex()
    assert wrapped.context == CONTEXT
    assert len(wrapped.ciphertext) == 32 + 256  # context tag, then a 2048-bit RSA block
    assert key.secret not in wrapped.ciphertext
    assert provider.unwrap(WrappedKey.from_json(wrapped.to_json())) == key
    assert fake.calls == [
        ("wrap_key", KeyWrapAlgorithm.rsa_oaep_256),
        ("unwrap_key", KeyWrapAlgorithm.rsa_oaep_256),
    ]
    assert provider.describe() == f"azure-keyvault {VAULT}/keys/{KEY_NAME}"


def test_a256kw_round_trip() -> None:
    fake = FakeCryptographyClient()
    provider = AzureKeyVaultKeyProvider(VAULT, KEY_NAME, crypto_client=fake, algorithm="A256KW")

    key, wrapped = provider.generate_data_key(CONTEXT)
    assert len(wrapped.ciphertext) == 32 + 40
    assert provider.unwrap(wrapped) == key
    assert {algorithm for _, algorithm in fake.calls} == {KeyWrapAlgorithm.aes_256}


@pytest.mark.parametrize(
    "context",
    [
        {**CONTEXT, "migrator:dataset": "videos"},
        {"migrator:plan": "plan-1"},
        {**CONTEXT, "extra": "x"},
    ],
    ids=["changed", "dropped", "added"],
)
def test_altered_context_is_a_wrong_key(
    provider: AzureKeyVaultKeyProvider, context: dict[str, str]
) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match="context was altered"):
        provider.unwrap(dataclasses.replace(wrapped, context=context))


def test_altered_tag_wrapped_bytes_or_key_id_is_a_wrong_key(
    provider: AzureKeyVaultKeyProvider,
) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)
    tag_flipped = bytearray(wrapped.ciphertext)
    tag_flipped[0] ^= 1
    body_flipped = bytearray(wrapped.ciphertext)
    body_flipped[-1] ^= 1

    with pytest.raises(WrongKeyError, match="context was altered"):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(tag_flipped)))
    with pytest.raises(WrongKeyError, match="HTTP 400 BadParameter"):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(body_flipped)))
    with pytest.raises(WrongKeyError, match="too short"):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext[:32]))
    with pytest.raises(WrongKeyError, match="recorded key id"):
        provider.unwrap(dataclasses.replace(wrapped, key_id="00" * 16))
    with pytest.raises(WrongKeyError, match="'local'"):
        provider.unwrap(dataclasses.replace(wrapped, provider="local"))


def test_key_wrapped_by_another_vault_key_is_a_wrong_key(
    provider: AzureKeyVaultKeyProvider, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    other_kid = f"{VAULT}/keys/another-kek/{VERSION}"
    other = AzureKeyVaultKeyProvider(
        VAULT,
        "another-kek",
        crypto_client=FakeCryptographyClient(other_kid, rsa_key=other_rsa_key),
    )
    _, wrapped = other.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match="another key: another-kek"):
        provider.unwrap(wrapped)
    # A record that claims this key: the vault itself cannot unwrap what another key wrapped.
    with pytest.raises(WrongKeyError, match="wrapped under another key"):
        provider.unwrap(dataclasses.replace(wrapped, kek_id=KID))


def test_key_from_another_vault_or_version_is_a_wrong_key(
    fake: FakeCryptographyClient,
) -> None:
    pinned = AzureKeyVaultKeyProvider(VAULT, KEY_NAME, key_version=VERSION, crypto_client=fake)
    _, wrapped = pinned.generate_data_key(CONTEXT)

    elsewhere = dataclasses.replace(
        wrapped, kek_id=f"https://other.vault.usgovcloudapi.net/keys/{KEY_NAME}/{VERSION}"
    )
    with pytest.raises(WrongKeyError, match="another vault"):
        pinned.unwrap(elsewhere)
    older = dataclasses.replace(wrapped, kek_id=f"{VAULT}/keys/{KEY_NAME}/{'f' * 32}")
    with pytest.raises(WrongKeyError, match="another key version"):
        pinned.unwrap(older)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            service_error(
                ResourceNotFoundError, 404, "Not Found", "KeyNotFound", "A key was not found."
            ),
            "ResourceNotFoundError HTTP 404 KeyNotFound: A key was not found.",
        ),
        (
            service_error(
                HttpResponseError,
                403,
                "Forbidden",
                "Forbidden",
                "Operation unwrapKey is not allowed on a disabled key.",
            ),
            "HTTP 403 Forbidden: Operation unwrapKey is not allowed on a disabled key.",
        ),
        (
            service_error(
                HttpResponseError, 429, "Too Many Requests", "Throttled", "Request was throttled."
            ),
            "HTTP 429 Throttled",
        ),
        (ClientAuthenticationError("no credential\nsecond line"), "cannot sign in"),
        (ServiceRequestError("connection refused"), "ServiceRequestError: connection refused"),
    ],
    ids=["not-found", "disabled", "throttled", "auth", "network"],
)
def test_sdk_errors_are_provider_errors(
    provider: AzureKeyVaultKeyProvider, error: Exception, expected: str
) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)
    failing = AzureKeyVaultKeyProvider(
        VAULT, KEY_NAME, crypto_client=FailingCryptographyClient(error)
    )

    with pytest.raises(KeyProviderError) as generating:
        failing.generate_data_key(CONTEXT)
    with pytest.raises(KeyProviderError) as unwrapping:
        failing.unwrap(wrapped)
    for raised in (generating.value, unwrapping.value):
        assert not isinstance(raised, WrongKeyError)
        assert expected in str(raised)
        assert KEY_NAME in str(raised)
        assert "\n" not in str(raised)


def test_no_secret_in_repr_str_or_errors(provider: AzureKeyVaultKeyProvider) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)
    texts = [repr(key), str(key), repr(provider), str(provider), provider.describe()]
    texts += [repr(wrapped), wrapped.to_json().decode()]
    for bad in (
        dataclasses.replace(wrapped, context={"migrator:plan": "other"}),
        dataclasses.replace(wrapped, key_id="00" * 16),
        dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext[:-1]),
    ):
        with pytest.raises(WrongKeyError) as recorded:
            provider.unwrap(bad)
        texts += [str(recorded.value), repr(recorded.value)]

    forms = [key.secret.hex(), repr(key.secret), base64.b64encode(key.secret).decode()]
    for text in texts:
        for form in forms:
            assert form not in text
    assert isinstance(key, DataKey)


# --- building the real SDK client ---------------------------------------------------------------


# azure.identity's value; the dev extra installs only azure-keyvault-keys.
GOVERNMENT_AUTHORITY = "login.microsoftonline.us"


class FakeIdentity:
    """Stands in for the azure.identity module; records how the credential was made."""

    AzureAuthorityHosts = SimpleNamespace(AZURE_GOVERNMENT=GOVERNMENT_AUTHORITY)

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    def DefaultAzureCredential(self, **kwargs: Any) -> Any:
        self.made.append(kwargs)
        return SimpleNamespace(get_token=lambda *scopes, **_: None)


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> FakeIdentity:
    fake_identity = FakeIdentity()
    monkeypatch.setattr(azure_keyvault, "import_identity", lambda: fake_identity)
    return fake_identity


def test_government_vault_signs_in_at_the_government_authority(identity: FakeIdentity) -> None:
    AzureKeyVaultKeyProvider(VAULT, KEY_NAME)
    assert identity.made == [{"authority": GOVERNMENT_AUTHORITY}]


def test_commercial_vault_uses_the_default_authority(identity: FakeIdentity) -> None:
    AzureKeyVaultKeyProvider("https://migrator-test.vault.azure.net", KEY_NAME)
    assert identity.made == [{}]


def test_given_credential_is_used(identity: FakeIdentity) -> None:
    AzureKeyVaultKeyProvider(VAULT, KEY_NAME, credential=SimpleNamespace())
    assert identity.made == []


def test_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.keyvault.keys.crypto", None)

    with pytest.raises(KeyProviderError, match=r"pip install 'migrator\[azure-keyvault\]'"):
        AzureKeyVaultKeyProvider(VAULT, KEY_NAME, crypto_client=FakeCryptographyClient())


def test_missing_identity_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)

    with pytest.raises(KeyProviderError, match="azure-identity is not installed"):
        AzureKeyVaultKeyProvider(VAULT, KEY_NAME)


@pytest.mark.parametrize(
    ("vault_url", "key_name", "kwargs", "problem"),
    [
        ("http://migrator-test.vault.azure.net", KEY_NAME, {}, "not a vault URL"),
        (f"{VAULT}/keys", KEY_NAME, {}, "not a vault URL"),
        (VAULT, "bad_name", {}, "not a Key Vault key name"),
        (VAULT, KEY_NAME, {"key_version": "../x"}, "not a Key Vault key version"),
        (VAULT, KEY_NAME, {"algorithm": "RSA1_5"}, "not one of"),
    ],
)
def test_bad_arguments_are_refused(
    vault_url: str, key_name: str, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        AzureKeyVaultKeyProvider(
            vault_url, key_name, crypto_client=FakeCryptographyClient(), **kwargs
        )


def test_unwrap_uses_the_key_version_that_wrapped(
    monkeypatch: pytest.MonkeyPatch, rsa_key: rsa.RSAPrivateKey
) -> None:
    # The SDK client for the versionless id wraps with the latest version and reports it;
    # after a rotation, unwrapping must go to that version, not to the new latest.
    made: list[str] = []

    def client_for(key_id: str, credential: Any) -> FakeCryptographyClient:
        made.append(key_id)
        return FakeCryptographyClient(KID, rsa_key=rsa_key)

    crypto = SimpleNamespace(CryptographyClient=client_for, KeyWrapAlgorithm=KeyWrapAlgorithm)
    monkeypatch.setattr(azure_keyvault, "import_crypto", lambda: crypto)
    provider = AzureKeyVaultKeyProvider(VAULT, KEY_NAME, credential=SimpleNamespace())

    key, wrapped = provider.generate_data_key(CONTEXT)
    assert provider.unwrap(wrapped) == key
    provider.generate_data_key(CONTEXT)
    assert made == [f"{VAULT}/keys/{KEY_NAME}", KID]

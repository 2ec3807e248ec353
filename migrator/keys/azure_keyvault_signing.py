"""The owner's signing key in Azure Key Vault (or Managed HSM): an EC key on P-256, in the
KEK's vault, used with `sign` (ES256: the vault signs the SHA-256 digest) and read with
`get_key` for its public key.

Writers need keys/sign and keys/get on it; readers only keys/get (or an exported audit key
file). It is not the KEK: anyone can wrap a data key with the KEK's public RSA key, no one but
the vault can sign with this one. A rotated key keeps its earlier versions, so a signature by an
earlier version is checked with that version's public key, found by listing the versions.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from typing import Any, NoReturn

from cryptography.hazmat.primitives.asymmetric import ec

from migrator.errors import KeyProviderError
from migrator.keys import azure_keyvault
from migrator.keys.azure_keyvault import check_key_address, default_credential, error_status
from migrator.keys.signing import (
    SIGNATURE_BYTES,
    CachedPublicKey,
    SigningPublicKey,
    public_key_der,
)

EC_KEY_TYPES = frozenset({"EC", "EC-HSM"})


def _key_client_class() -> Any:
    try:
        return importlib.import_module("azure.keyvault.keys").KeyClient
    except ImportError:
        raise KeyProviderError(
            "azure-keyvault: azure-keyvault-keys is not installed"
            " (pip install 'migrator[azure-keyvault]')"
        ) from None


class AzureKeyVaultSigner:
    """Signs with a vault's EC P-256 key. `crypto_client` and `key_client` stand in for the
    SDK's clients in tests."""

    def __init__(
        self,
        vault_url: str,
        key_name: str,
        *,
        key_version: str | None = None,
        credential: Any | None = None,
        crypto_client: Any | None = None,
        key_client: Any | None = None,
    ) -> None:
        parts = check_key_address(vault_url, key_name, key_version)
        crypto = azure_keyvault.import_crypto()
        self._errors = azure_keyvault.import_errors()
        self._algorithm: Any = crypto.SignatureAlgorithm.es256
        self._crypto_class: Any = crypto.CryptographyClient
        self.vault_url = f"https://{parts.netloc}"
        self.key_name = key_name
        self.key_version = key_version
        self._credential = credential
        self._crypto_client = crypto_client
        if key_client is None:
            if credential is None:
                self._credential = default_credential(self.vault_url)
            key_client = _key_client_class()(self.vault_url, self._credential)
        self._key_client: Any = key_client
        self._signing_kid: str | None = None  # the version signatures are made with
        self._public = CachedPublicKey(self._fetch_current)
        self._versions: dict[str, SigningPublicKey] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        version = f"/{self.key_version}" if self.key_version else ""
        return f"azure-keyvault signing key {self.vault_url}/keys/{self.key_name}{version}"

    def __repr__(self) -> str:
        return f"AzureKeyVaultSigner({self.vault_url!r}, {self.key_name!r})"

    def _get(self, version: str | None) -> tuple[str, SigningPublicKey]:
        """(the versioned key id, its public key)."""
        try:
            key = self._key_client.get_key(self.key_name, version=version)
        except self._errors.AzureError as exc:
            self._raise("get_key", exc)
        jwk = key.key
        if str(jwk.kty) not in EC_KEY_TYPES or str(jwk.crv) != "P-256":
            raise KeyProviderError(
                f"{self.describe()}: is a {jwk.kty} key on {jwk.crv}; the signing key must be"
                " an EC key on P-256"
            )
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), ec.SECP256R1()
        )
        try:
            der = public_key_der(numbers.public_key())
        except ValueError:
            raise KeyProviderError(f"{self.describe()}: its public key is not on P-256") from None
        return str(key.id), SigningPublicKey(der, f"azure-keyvault {key.id}")

    def _fetch_current(self) -> SigningPublicKey:
        kid, public = self._get(self.key_version)
        self._signing_kid = kid
        return public

    def public_key(self) -> SigningPublicKey:
        return self._public.get()

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        current = self.public_key()
        if current.key_id == key_id:
            return current
        with self._lock:  # an earlier version: list them once
            if self._versions is None:
                self._versions = {}
                try:
                    listed = [
                        p.version
                        for p in self._key_client.list_properties_of_key_versions(self.key_name)
                    ]
                except self._errors.AzureError as exc:
                    self._raise("list_properties_of_key_versions", exc)
                for version in listed:
                    _, public = self._get(version)
                    self._versions[public.key_id] = public
            return self._versions.get(key_id)

    def sign(self, message: bytes) -> bytes:
        self.public_key()
        client = self._crypto_client
        if client is None:
            client = self._crypto_class(self._signing_kid, self._credential)
        try:
            result = client.sign(self._algorithm, hashlib.sha256(message).digest())
        except self._errors.AzureError as exc:
            self._raise("sign", exc)
        signature = bytes(result.signature)
        if len(signature) != SIGNATURE_BYTES:
            raise KeyProviderError(
                f"{self.describe()}: sign answered {len(signature)} bytes, not an ES256 signature"
            )
        return signature

    def _raise(self, operation: str, exc: Exception) -> NoReturn:
        hint = ""
        if isinstance(exc, self._errors.ResourceNotFoundError):
            hint = " (no such key or version in this vault)"
        raise KeyProviderError(
            f"{self.describe()}: {operation} failed: {error_status(exc)}{hint}"
        ) from exc

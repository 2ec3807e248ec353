"""Azure Key Vault provider (Azure Government included): data keys wrapped by a vault key.

Data keys are generated here (os.urandom) and wrapped with the vault key through the SDK's
`CryptographyClient.wrap_key` (RSA-OAEP-256, or A256KW for a Managed HSM `oct` key). Key Vault's
wrap takes no encryption context, so the context is sealed separately: the stored ciphertext is
`tag(32) || wrapped`, where `tag` is an HMAC-SHA256 under the data key over the key id and the
context, checked after unwrapping.

`kek_id` is the key identifier the SDK reports for the wrap; it carries the key version when the
caller may read the key (keys/get) or a version is configured, and unwrapping uses that version,
so rotating the vault key keeps old data readable. Without either, it is the versionless id and
unwrapping uses the key's latest version.

The SDK (`pip install 'migrator[azure-keyvault]'`) is imported only when a provider is built.
No Key Vault emulator exists, so the tests use a fake `CryptographyClient` that wraps with a real
RSA key.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import re
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any, NoReturn
from urllib.parse import SplitResult, urlsplit

import orjson

from migrator.errors import KeyProviderError, WrongKeyError
from migrator.keys.datakey import DATA_KEY_BYTES, DataKey
from migrator.keys.provider import WrappedKey, check_provider
from migrator.keys.signing import Signer, UnconfiguredSigner

DEFAULT_ALGORITHM = "RSA-OAEP-256"
WRAP_ALGORITHMS = frozenset({"RSA-OAEP-256", "A256KW"})
CONTEXT_TAG_BYTES = 32
INSTALL_HINT = "pip install 'migrator[azure-keyvault]'"
# Key Vault and Managed HSM in Azure Government: *.vault.usgovcloudapi.net, *.managedhsm.…
GOVERNMENT_DNS_SUFFIX = ".usgovcloudapi.net"

KEY_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
KEY_VERSION = re.compile(r"[0-9A-Za-z]{1,64}")
_TAG_LABEL = b"migrator/v1/azure-keyvault-context\n"


def import_crypto() -> ModuleType:
    """The SDK's crypto module, imported only when a provider or signer is built."""
    try:
        import azure.keyvault.keys.crypto as crypto
    except ImportError:
        raise KeyProviderError(
            f"azure-keyvault: azure-keyvault-keys is not installed ({INSTALL_HINT})"
        ) from None
    return crypto


def import_identity() -> ModuleType:
    """azure-identity, imported only when no credential is given."""
    try:
        return importlib.import_module("azure.identity")
    except ImportError:
        raise KeyProviderError(
            f"azure-keyvault: azure-identity is not installed ({INSTALL_HINT})"
        ) from None


def import_errors() -> ModuleType:
    """azure-core's exceptions, imported with the SDK."""
    try:
        import azure.core.exceptions as errors
    except ImportError:
        raise KeyProviderError(
            f"azure-keyvault: azure-core is not installed ({INSTALL_HINT})"
        ) from None
    return errors


def check_key_address(vault_url: str, key_name: str, key_version: str | None) -> SplitResult:
    """The vault URL split, if it, the key name and version have the shapes Key Vault accepts
    (ValueError if not)."""
    parts = urlsplit(vault_url)
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
        raise ValueError(f"{vault_url!r} is not a vault URL such as https://NAME.vault.azure.net")
    if not KEY_NAME.fullmatch(key_name):
        raise ValueError(f"{key_name!r} is not a Key Vault key name (1-127 of 0-9, a-z, '-')")
    if key_version is not None and not KEY_VERSION.fullmatch(key_version):
        raise ValueError(f"{key_version!r} is not a Key Vault key version")
    return parts


def is_azure_government(vault_url: str) -> bool:
    host = urlsplit(vault_url).hostname or ""
    return host.endswith(GOVERNMENT_DNS_SUFFIX)


def default_credential(vault_url: str) -> Any:
    """DefaultAzureCredential, signing in at the Azure Government authority for a gov vault."""
    identity = import_identity()
    if is_azure_government(vault_url):
        return identity.DefaultAzureCredential(
            authority=identity.AzureAuthorityHosts.AZURE_GOVERNMENT
        )
    return identity.DefaultAzureCredential()


def context_tag(key: DataKey, context: Mapping[str, str]) -> bytes:
    """The HMAC that binds the context to the data key, since Key Vault's wrap takes none."""
    message = _TAG_LABEL + orjson.dumps(
        {"key_id": key.key_id.hex(), "context": dict(context)}, option=orjson.OPT_SORT_KEYS
    )
    return hmac.new(key.secret, message, hashlib.sha256).digest()


class AzureKeyVaultKeyProvider:
    """Wraps locally generated data keys with a Key Vault (or Managed HSM) key."""

    name = "azure-keyvault"

    def __init__(
        self,
        vault_url: str,
        key_name: str,
        *,
        key_version: str | None = None,
        credential: Any | None = None,
        crypto_client: Any | None = None,
        algorithm: str = DEFAULT_ALGORITHM,
        signer: Signer | None = None,
    ) -> None:
        parts = check_key_address(vault_url, key_name, key_version)
        if algorithm not in WRAP_ALGORITHMS:
            raise ValueError(
                f"algorithm {algorithm!r} is not one of {', '.join(sorted(WRAP_ALGORITHMS))}"
            )
        crypto = import_crypto()
        self._errors = import_errors()
        self._client_class: Any = crypto.CryptographyClient
        self._algorithm: Any = crypto.KeyWrapAlgorithm(algorithm)
        self._vault_host = (parts.hostname or "").lower()  # check_key_address: never empty
        self.vault_url = f"https://{parts.netloc}"
        self.key_name = key_name
        self.key_version = key_version
        self.key_id = f"{self.vault_url}/keys/{key_name}" + (
            f"/{key_version}" if key_version else ""
        )
        self._injected_client = crypto_client
        # The plan's signing key (an EC key of the vault: azure_keyvault_signing.py).
        self.signer: Signer = signer or UnconfiguredSigner(
            self.describe(), "keys.signing_key_name", "an EC P-256 key in the vault"
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._credential = credential
        if crypto_client is None:
            if credential is None:
                self._credential = default_credential(self.vault_url)
            self._client_for(self.key_id)  # fail here, not mid-run, if the SDK refuses the id

    def describe(self) -> str:
        return f"azure-keyvault {self.key_id}"

    def __repr__(self) -> str:
        return f"AzureKeyVaultKeyProvider({self.key_id!r})"

    def _client_for(self, key_id: str) -> Any:
        if self._injected_client is not None:
            return self._injected_client
        with self._lock:
            client = self._clients.get(key_id)
            if client is None:
                client = self._client_class(key_id, self._credential)
                self._clients[key_id] = client
            return client

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[DataKey, WrappedKey]:
        key = DataKey(os.urandom(DATA_KEY_BYTES))
        return key, self.wrap(key, context)

    def wrap(self, key: DataKey, context: Mapping[str, str]) -> WrappedKey:
        try:
            result = self._client_for(self.key_id).wrap_key(self._algorithm, key.secret)
        except self._errors.AzureError as exc:
            self._raise("wrap_key", self.key_id, exc)
        kek_id = str(result.key_id or self.key_id)
        if self._foreign_key_reason(kek_id):
            raise KeyProviderError(
                f"{self.describe()}: wrap_key answered for another key ({kek_id})"
            )
        return WrappedKey(
            provider=self.name,
            kek_id=kek_id,
            key_id=key.key_id.hex(),
            ciphertext=context_tag(key, context) + bytes(result.encrypted_key),
            context=dict(context),
        )

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        check_provider(wrapped, self.name)
        reason = self._foreign_key_reason(wrapped.kek_id)
        if reason:
            raise WrongKeyError(
                f"data key was wrapped under {wrapped.kek_id}, but the plan uses {self.key_id}"
                f" ({reason})"
            )
        if len(wrapped.ciphertext) <= CONTEXT_TAG_BYTES:
            raise WrongKeyError(f"data key wrapped under {wrapped.kek_id} is too short")
        tag = wrapped.ciphertext[:CONTEXT_TAG_BYTES]
        sealed = wrapped.ciphertext[CONTEXT_TAG_BYTES:]
        try:
            result = self._client_for(wrapped.kek_id).unwrap_key(self._algorithm, sealed)
        except self._errors.HttpResponseError as exc:
            if exc.status_code == 400:  # Key Vault's answer to bytes this key did not wrap
                raise WrongKeyError(
                    f"data key cannot be unwrapped with {wrapped.kek_id} ({error_status(exc)}): it"
                    " was wrapped under another key, or the wrapped bytes were altered"
                ) from None
            self._raise("unwrap_key", wrapped.kek_id, exc)
        except self._errors.AzureError as exc:
            self._raise("unwrap_key", wrapped.kek_id, exc)
        secret = bytes(result.key)
        if len(secret) != DATA_KEY_BYTES:
            raise WrongKeyError(
                f"data key unwrapped with {wrapped.kek_id} has {len(secret)} bytes, not"
                f" {DATA_KEY_BYTES}: it was wrapped under another key"
            )
        key = DataKey(secret)
        del secret
        if key.key_id.hex() != wrapped.key_id:
            raise WrongKeyError(
                f"data key unwrapped with {wrapped.kek_id} does not match its recorded key id"
            )
        if not hmac.compare_digest(tag, context_tag(key, wrapped.context)):
            raise WrongKeyError(
                f"data key wrapped under {wrapped.kek_id}: its context was altered"
                f" (now {wrapped.context})"
            )
        return key

    def _foreign_key_reason(self, kek_id: str) -> str | None:
        """Why `kek_id` is not this provider's key (another vault, name or version), or None."""
        parts = urlsplit(kek_id)
        path = [p for p in parts.path.split("/") if p]
        if (parts.hostname or "").lower() != self._vault_host:
            return f"another vault: {parts.hostname}"
        if len(path) not in (2, 3) or path[0] != "keys":
            return "not a Key Vault key identifier"
        if path[1].lower() != self.key_name.lower():
            return f"another key: {path[1]}"
        if self.key_version and len(path) == 3 and path[2] != self.key_version:
            return f"another key version: {path[2]}"
        return None

    def _raise(self, operation: str, key_id: str, exc: Exception) -> NoReturn:
        if isinstance(exc, self._errors.ResourceNotFoundError):
            hint = " (no such key or version in this vault)"
        elif isinstance(exc, self._errors.ClientAuthenticationError):
            hint = " (cannot sign in to Azure: check the credential and the cloud's authority)"
        else:
            hint = ""
        raise KeyProviderError(
            f"azure-keyvault {key_id}: {operation} failed: {error_status(exc)}{hint}"
        ) from exc


def error_status(exc: Exception) -> str:
    """Error type, HTTP status and service error code, and the message's first line."""
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    message = str(text).strip().splitlines()
    parts = [type(exc).__name__]
    if status is not None:
        parts.append(f"HTTP {status}")
    if code:
        parts.append(str(code))
    head = " ".join(parts)
    return f"{head}: {message[0][:300]}" if message else head

"""Local KEK file provider: the rehearsal and on-premises option; the KEK is a 0600 file, and
the plan's signing key another one beside it (migrator/keys/local_signing.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from migrator.errors import KeyProviderError, UsageError, WrongKeyError
from migrator.keys.datakey import DATA_KEY_BYTES, DataKey
from migrator.keys.key_file import read_key_file
from migrator.keys.local_signing import LocalSigner, default_signing_key_file
from migrator.keys.provider import WrappedKey, check_provider
from migrator.keys.signing import Signer

KEK_HEADER = b"migrator-kek-v1 "


def init_kek_file(path: Path) -> str:
    """Create a new KEK file (mode 0600) and return its KEK id; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path}: already exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise KeyProviderError(f"{path}: cannot create key file ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(KEK_HEADER + base64.b64encode(secret) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return _kek_id(secret)


def _kek_id(secret: bytes) -> str:
    return hmac.new(secret, b"migrator/v1/kek-id", hashlib.sha256).hexdigest()[:16]


def _aad(kek_id: str, key_id: str, context: Mapping[str, str]) -> bytes:
    return orjson.dumps(
        {"kek_id": kek_id, "key_id": key_id, "context": dict(context)},
        option=orjson.OPT_SORT_KEYS,
    )


class LocalKeyProvider:
    """Wraps data keys with AES-256-GCM under a KEK read from a file."""

    name = "local"

    def __init__(
        self, kek_file: Path, signing_key_file: Path | None = None, *, current: bool = True
    ) -> None:
        """`signing_key_file`: the plan's signing key, by default beside the KEK file; the
        current KEK's is made if absent, an earlier one's (`current=False`) only read."""
        self._path = kek_file
        secret = self._read(kek_file)
        self._aead = AESGCM(secret)
        self.kek_id = _kek_id(secret)
        self.signer: Signer = LocalSigner(
            signing_key_file or default_signing_key_file(kek_file), create=current
        )

    @staticmethod
    def _read(path: Path) -> bytes:
        secret = read_key_file(
            path, KEK_HEADER, "KEK file", f"create one with `migrator keys init {path}`"
        )
        if len(secret) != 32:
            raise KeyProviderError(f"{path}: KEK file is corrupt (wrong key length)")
        return secret

    def describe(self) -> str:
        return f"local KEK {self._path} (id {self.kek_id})"

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[DataKey, WrappedKey]:
        key = DataKey(os.urandom(DATA_KEY_BYTES))
        return key, self.wrap(key, context)

    def wrap(self, key: DataKey, context: Mapping[str, str]) -> WrappedKey:
        nonce = os.urandom(12)
        aad = _aad(self.kek_id, key.key_id.hex(), context)
        sealed = nonce + self._aead.encrypt(nonce, key.secret, aad)
        return WrappedKey(
            provider=self.name,
            kek_id=self.kek_id,
            key_id=key.key_id.hex(),
            ciphertext=sealed,
            context=dict(context),
        )

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        check_provider(wrapped, self.name)
        if wrapped.kek_id != self.kek_id:
            raise WrongKeyError(
                f"data key was wrapped under KEK id {wrapped.kek_id}, but {self._path} has KEK id"
                f" {self.kek_id}"
            )
        nonce, sealed = wrapped.ciphertext[:12], wrapped.ciphertext[12:]
        try:
            secret = self._aead.decrypt(
                nonce, sealed, _aad(wrapped.kek_id, wrapped.key_id, wrapped.context)
            )
        except InvalidTag:
            raise WrongKeyError(
                f"data key cannot be unwrapped with {self._path}: wrapped key or context altered"
            ) from None
        key = DataKey(secret)
        if key.key_id.hex() != wrapped.key_id:
            raise WrongKeyError("unwrapped data key does not match its recorded key id")
        return key

"""The local provider's signing key: a P-256 private key in its own 0600 file beside the KEK
file (docs/FORMAT.md §10.6), so that the ledger's and keyrings' signatures need a key that no
data key, and no copy of the KEK's wrapped keys, gives.

The file is one line: `migrator-signing-key-v1 ` and the base64 of the 32-byte private scalar.
A KEK's signing key file is made the first time it is needed, and never overwritten.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from migrator.errors import KeyProviderError, UsageError
from migrator.keys.key_file import read_key_file
from migrator.keys.signing import (
    CachedPublicKey,
    SigningPublicKey,
    public_key_der,
    raw_signature,
)

SIGNING_KEY_HEADER = b"migrator-signing-key-v1 "
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def default_signing_key_file(kek_file: Path) -> Path:
    """Where a KEK file's signing key lives unless the plan says: `kek.key` → `kek.signing.key`."""
    return kek_file.with_name(f"{kek_file.stem}.signing.key")


def init_signing_key_file(path: Path, *, exist_ok: bool = False) -> str:
    """Create a signing key file (mode 0600) and return its key id. It is written aside and
    linked into place, so a process racing to create the same file reads a whole one; with
    `exist_ok`, the file another process made first is kept."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(SIGNING_KEY_HEADER + base64.b64encode(scalar) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            if not exist_ok:
                raise UsageError(
                    f"{path}: already exists; refusing to overwrite a key file"
                ) from None
            return LocalSigner(path).public_key().key_id
    except OSError as exc:
        raise KeyProviderError(f"{path}: cannot create signing key file ({exc.strerror})") from None
    finally:
        aside.unlink(missing_ok=True)
    return SigningPublicKey(public_key_der(private.public_key()), "local").key_id


class LocalSigner:
    """Signs with the P-256 key in a local file. `create`: make the file if it is absent (the
    current KEK's); a `keys.previous` entry's is only read, to trust what it signed."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._create = create
        self._private: ec.EllipticCurvePrivateKey | None = None
        self._lock = threading.Lock()
        self._public = CachedPublicKey(
            lambda: SigningPublicKey(public_key_der(self._private_key().public_key()), "local")
        )

    def describe(self) -> str:
        return f"local signing key {self.path}"

    def __repr__(self) -> str:
        return f"LocalSigner({str(self.path)!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("LocalSigner cannot be pickled: key material stays in process memory")

    def _private_key(self) -> ec.EllipticCurvePrivateKey:
        """The key, read from its file once, by whichever thread comes first."""
        with self._lock:
            if self._private is None:
                self._private = self._read()
            return self._private

    def _read(self) -> ec.EllipticCurvePrivateKey:
        if self._create and not self.path.exists():
            init_signing_key_file(self.path, exist_ok=True)
        scalar = read_key_file(
            self.path,
            SIGNING_KEY_HEADER,
            "signing key file",
            "the KEK file's signing key: keep it beside the KEK file",
        )
        value = int.from_bytes(scalar, "big")
        if len(scalar) != 32 or not 0 < value < _P256_ORDER:
            raise KeyProviderError(f"{self.path}: signing key file is corrupt (not a P-256 key)")
        return ec.derive_private_key(value, ec.SECP256R1())

    def public_key(self) -> SigningPublicKey:
        return self._public.get()

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        if not self._create and not self.path.exists():
            return None  # an earlier KEK whose signing key is gone vouches for nothing
        public = self.public_key()
        return public if public.key_id == key_id else None

    def sign(self, message: bytes) -> bytes:
        private = self._private_key()
        return raw_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))


class MemorySigner:
    """Signs with a P-256 private key held in memory: for tests and tools that make their own
    throwaway key (`MemorySigner.generate()`)."""

    def __init__(self, private: ec.EllipticCurvePrivateKey, source: str = "memory") -> None:
        self._private = private
        self._public = SigningPublicKey(public_key_der(private.public_key()), source)

    @classmethod
    def generate(cls, source: str = "memory") -> MemorySigner:
        return cls(ec.generate_private_key(ec.SECP256R1()), source)

    def describe(self) -> str:
        return f"in-memory signing key {self._public.key_id}"

    def __reduce__(self) -> NoReturn:
        raise TypeError("MemorySigner cannot be pickled: key material stays in process memory")

    def public_key(self) -> SigningPublicKey:
        return self._public

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        return self._public if key_id == self._public.key_id else None

    def sign(self, message: bytes) -> bytes:
        return raw_signature(self._private.sign(message, ec.ECDSA(hashes.SHA256())))

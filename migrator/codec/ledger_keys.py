"""The keys an audit ledger's writer holds (docs/FORMAT.md §11): the plan's signing key, which
signs each segment in its key service, and the tag key, which names what a chunk held without
showing its digest."""

from __future__ import annotations

import hashlib
import hmac
from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.keys.datakey import DataKey
from migrator.keys.signing import Signer, sign_checked

__all__ = ["INFO_PLAIN_TAG_KEY", "LedgerKeys"]

INFO_PLAIN_TAG_KEY = b"migrator/v1/audit-ledger/plain-tag-key"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class LedgerKeys:
    """What writing a dataset's ledger needs: the plan's signing key, and the tag key derived
    from the dataset's first data key (the one every keyring keeps first, so rotations never
    change it); an audit comparing tags needs no signer. Holds a secret: never print or pickle
    it."""

    __slots__ = ("_tag_key", "signer")

    def __init__(self, first: DataKey, signer: Signer | None = None) -> None:
        self.signer = signer
        self._tag_key = _hkdf(first.secret, INFO_PLAIN_TAG_KEY)

    def _signer(self) -> Signer:
        if self.signer is None:
            raise ValueError("these ledger keys only tag: they were made without a signer")
        return self.signer

    @property
    def signing_key_id(self) -> str:
        return self._signer().public_key().key_id

    def sign(self, message: bytes) -> bytes:
        """Made by the key service, checked against the public key the header names."""
        return sign_checked(self._signer(), message)[1]

    def plain_tag(self, plain_xxh3: str) -> str:
        """A keyed tag of a plaintext digest: the ledger names what a chunk held without
        showing its digest (one an observer could test guesses against)."""
        mac = hmac.new(self._tag_key, bytes.fromhex(plain_xxh3), hashlib.sha256)
        return mac.digest()[:16].hex()

    def __repr__(self) -> str:
        return f"LedgerKeys(signer={self.signer.describe() if self.signer else None})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("LedgerKeys cannot be pickled: key material stays in process memory")

"""The in-memory data key: 32 secret bytes that must never be printed, logged or pickled."""

from __future__ import annotations

import hashlib
import hmac
from typing import NoReturn

DATA_KEY_BYTES = 32


class DataKey:
    """A dataset's AES-256 data key. `key_id` is a non-secret fingerprint safe to store."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != DATA_KEY_BYTES:
            raise ValueError("a data key must be 32 bytes")
        self._secret = bytes(secret)
        # HMAC fingerprint: identifies the key without revealing anything usable about it.
        self.key_id = hmac.new(self._secret, b"migrator/v1/key-id", hashlib.sha256).digest()[:16]

    @property
    def secret(self) -> bytes:
        return self._secret

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id.hex()})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("DataKey cannot be pickled: key material stays in process memory")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataKey) and hmac.compare_digest(self._secret, other.secret)

    def __hash__(self) -> int:
        return hash(self.key_id)

"""The owner's signing key: it vouches for keyrings (docs/FORMAT.md §10) and signs the audit
ledger (§11).

It lives in the key service beside the KEK and apart from the data keys: an asymmetric KMS
key, a Key Vault EC key, or a local key file. Whoever holds only data keys (every restore
operator), or can only wrap new ones (kms:Encrypt, Key Vault's public RSA key), cannot make a
signature that verifies; anyone with the public key can check one.

Every signature is ECDSA over P-256 with SHA-256 (KMS `ECDSA_SHA_256`, Key Vault `ES256`) of
`label || SHA-256(canonical JSON)`: a short message, so KMS signs it whole (`MessageType=RAW`)
whatever the document's size. Signatures are stored as `r || s` (64 bytes); keys are named by a
fingerprint of their public key, so a verifier needs nothing but public keys.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from migrator.errors import KeyProviderError

SIGNATURE_ALGORITHM = "ecdsa-p256-sha256"
SIGNATURE_BYTES = 64  # r || s, each 32 bytes big-endian
SIGNING_KEY_ID_HEX = 32  # hex digits of a signing key's fingerprint


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace (docs/FORMAT.md §11.2): what signatures and links cover."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def signed_message(label: bytes, doc: Mapping[str, Any]) -> bytes:
    return label + hashlib.sha256(canonical_json(doc)).digest()


def signing_key_id(public_key_der: bytes) -> str:
    """A signing key's name: SHA-256 of its SubjectPublicKeyInfo (DER), first 32 hex digits."""
    return hashlib.sha256(public_key_der).hexdigest()[:SIGNING_KEY_ID_HEX]


def raw_signature(der: bytes) -> bytes:
    """An ECDSA signature as KMS and `cryptography` give it (DER) → `r || s`."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_key_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class SigningPublicKey:
    """The public half of a signing key: checks signatures, makes none. Not secret."""

    public_key: bytes  # DER SubjectPublicKeyInfo of a P-256 key
    source: str  # where its private half lives, for people: "aws-kms ARN", "local", ...
    key_id: str = field(init=False)  # signing_key_id(public_key)
    _key: ec.EllipticCurvePublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            key = serialization.load_der_public_key(self.public_key)
        except ValueError:
            raise ValueError("not a DER SubjectPublicKeyInfo") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("not a P-256 (ECC_NIST_P256) public key")
        object.__setattr__(self, "key_id", signing_key_id(self.public_key))
        object.__setattr__(self, "_key", key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        try:
            self._key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def as_dict(self) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "algorithm": SIGNATURE_ALGORITHM,
            "public_key": base64.b64encode(self.public_key).decode(),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, doc: Any) -> SigningPublicKey:
        """ValueError saying what is wrong: a missing field, another algorithm, a key id that
        is not its key's fingerprint."""
        if not isinstance(doc, dict) or set(doc) != {"key_id", "algorithm", "public_key", "source"}:
            raise ValueError("fields are not key_id, algorithm, public_key and source")
        if doc["algorithm"] != SIGNATURE_ALGORITHM:
            raise ValueError(f"algorithm {doc['algorithm']!r} is not {SIGNATURE_ALGORITHM!r}")
        if not isinstance(doc["public_key"], str) or not isinstance(doc["source"], str):
            raise ValueError("public_key and source are not strings")
        key = cls(base64.b64decode(doc["public_key"], validate=True), doc["source"])
        if doc["key_id"] != key.key_id:
            raise ValueError(f"key_id {doc['key_id']!r} is not its public key's fingerprint")
        return key


class Signer(Protocol):
    """The owner's signing key in its key service: signs, and trusts its own public key."""

    def describe(self) -> str:
        """Where the key lives, for messages (never key material)."""

    def public_key(self) -> SigningPublicKey:
        """Its public key (asked once); KeyProviderError if the service cannot say."""

    def sign(self, message: bytes) -> bytes:
        """`r || s` over `message`, made by the key service."""

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        """Its public key if `key_id` names it (or an earlier version of it), else None."""


class SignatureVerifier(Protocol):
    """The signing keys a reader trusts, by key id."""

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        """The trusted public key `key_id` names; None if no trusted key has that id."""

    def describe(self) -> str:
        """Which keys it trusts, for messages."""


def sign_checked(signer: Signer, message: bytes) -> tuple[str, bytes]:
    """(key id, signature) of `message`, checked against the signer's public key before it is
    used: a service that answered for another key, or garbage, stops here."""
    public = signer.public_key()
    signature = signer.sign(message)
    if not public.verify(message, signature):
        raise KeyProviderError(
            f"{signer.describe()}: its signature does not verify with its public key"
            f" {public.key_id}: it answered for another key?"
        )
    return public.key_id, signature


class CachedPublicKey:
    """A signer's public key, asked of its service once, by whichever thread comes first."""

    def __init__(self, fetch: Callable[[], SigningPublicKey]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._key: SigningPublicKey | None = None

    def get(self) -> SigningPublicKey:
        with self._lock:
            if self._key is None:
                self._key = self._fetch()
            return self._key


class UnconfiguredSigner:
    """A KEK whose plan entry names no signing key: it trusts nothing, and signing with it is
    the error that says which field to set."""

    def __init__(self, what: str, field_name: str, hint: str) -> None:
        self._what = what
        self._field = field_name
        self._hint = hint

    def describe(self) -> str:
        return f"{self._what}: no signing key ({self._field} is not set)"

    def _missing(self) -> KeyProviderError:
        return KeyProviderError(
            f"{self._what}: {self._field} is not set: the plan's signing key ({self._hint})"
            " signs keyrings and audit ledgers, and readers check them with it"
        )

    def public_key(self) -> SigningPublicKey:
        raise self._missing()

    def sign(self, message: bytes) -> bytes:
        raise self._missing()

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        return None


class TrustedKeys:
    """A fixed set of public keys: an exported audit key file, or the signers a verified
    keyring lists."""

    def __init__(self, keys: Iterable[SigningPublicKey], source: str = "") -> None:
        self._keys = {k.key_id: k for k in keys}
        self.source = source

    @property
    def keys(self) -> list[SigningPublicKey]:
        return list(self._keys.values())

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        return self._keys.get(key_id)

    def describe(self) -> str:
        ids = ", ".join(self._keys) or "none"
        return f"{self.source} ({ids})" if self.source else ids


class AnyOf:
    """Trusts what any of its verifiers trusts: the plan's current signing key and those of
    `keys.previous`; a keyring's signers beside them."""

    def __init__(self, verifiers: Sequence[SignatureVerifier]) -> None:
        self.verifiers = tuple(verifiers)

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        for verifier in self.verifiers:
            found = verifier.public_key_for(key_id)
            if found is not None:
                return found
        return None

    def describe(self) -> str:
        return "; ".join(v.describe() for v in self.verifiers) or "no signing key"

"""A dataset's keyring as stored (docs/FORMAT.md §10.2): its wrapped data keys, which key seals
which generations, the signing keys of its ledger, and the owner's signature over all of it.

What vouches for a keyring is the plan's signing key, which lives in the key service and which
no data key gives: someone who can write the destination and wrap keys (kms:Encrypt, Key Vault's
public RSA key) but not sign cannot make migrator seal under a key they chose. Nothing in it is
secret.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from migrator.codec.hex_fields import HEX_KEY_ID, HEX_SIGNATURE
from migrator.errors import (
    MisplacedChunkError,
    TamperedError,
    UnknownVersionError,
    UntrustedKeyError,
)
from migrator.keys.provider import WrappedKey
from migrator.keys.signing import (
    SignatureVerifier,
    Signer,
    SigningPublicKey,
    TrustedKeys,
    sign_checked,
    signed_message,
)
from migrator.repository.names import data_key_object, keyring_object

KEYRING_FORMAT = "migrator/keyring"
KEYRING_VERSION = 2  # 1: vouched for by a MAC under its own current data key; no longer read
SIGNED_LABEL = b"migrator/v2/keyring\n"
_FIELDS = frozenset(
    {
        "format",
        "version",
        "plan",
        "dataset",
        "revision",
        "keys",
        "sealing",
        "signers",
        "signed_by",
        "signature",
    }
)


@dataclass(frozen=True, slots=True)
class StoredKeyring:
    """A dataset's data keys as stored: wrapped, oldest first; which of them seals which
    generations; the public keys of every signing key that signed for the dataset; and the
    signature of one of them over the rest. Revision 0 is `datakey.json`."""

    plan: str
    dataset: str
    revision: int
    keys: tuple[WrappedKey, ...]
    # (first generation, key id): the key that seals generations from there to the next entry
    sealing: tuple[tuple[int, str], ...]
    signers: tuple[SigningPublicKey, ...] = ()
    signed_by: str = ""  # key id of the signer whose signature this is
    signature: str = ""  # hex r || s; "" while unsigned

    @property
    def object_key(self) -> str:
        if self.revision == 0:
            return data_key_object(self.dataset)
        return keyring_object(self.dataset, self.revision)

    @property
    def current(self) -> str:
        """The key id that seals new generations: the last of `sealing`."""
        return self.sealing[-1][1]

    def body(self) -> dict[str, Any]:
        """Every field but `signature`: what the signature covers."""
        return {
            "format": KEYRING_FORMAT,
            "version": KEYRING_VERSION,
            "plan": self.plan,
            "dataset": self.dataset,
            "revision": self.revision,
            "keys": [w.as_dict() for w in self.keys],
            "sealing": [{"from_generation": g, "key_id": k} for g, k in self.sealing],
            "signers": [s.as_dict() for s in self.signers],
            "signed_by": self.signed_by,
        }

    def signed_bytes(self) -> bytes:
        return signed_message(SIGNED_LABEL, self.body())

    def signed(self, signer: Signer) -> StoredKeyring:
        """This keyring signed by `signer`, whose public key joins `signers` if it is new."""
        public = signer.public_key()
        signers = self.signers
        if public.key_id not in {s.key_id for s in signers}:
            signers = (*signers, public)
        unsigned = dataclasses.replace(self, signers=signers, signed_by=public.key_id)
        _, signature = sign_checked(signer, unsigned.signed_bytes())
        return dataclasses.replace(unsigned, signature=signature.hex())

    def to_json(self) -> bytes:
        if not self.signature:
            raise ValueError("a keyring is stored signed")
        doc = self.body() | {"signature": self.signature}
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    def untrusted(self, why: str) -> UntrustedKeyError:
        """The refusal that names the keyring object and the key it would have sealed with."""
        return UntrustedKeyError(
            f"dataset {self.dataset}: keyring revision {self.revision} {why}; its data keys"
            f" ({', '.join(w.key_id for w in self.keys)}) are refused, current key"
            f" {self.current} included: someone other than the plan's owner may have written it",
            object_key=self.object_key,
            key_id=self.current,
        )

    def trusted_signers(self, verifier: SignatureVerifier) -> TrustedKeys:
        """The signing keys it lists, once its own signature is checked with a key `verifier`
        trusts; else the UntrustedKeyError that names it."""
        public = verifier.public_key_for(self.signed_by)
        if public is None:
            raise self.untrusted(
                f"is signed by signing key {self.signed_by}, which the plan does not trust"
                f" (trusted: {verifier.describe()})"
            )
        if not public.verify(self.signed_bytes(), bytes.fromhex(self.signature)):
            raise self.untrusted(
                f"does not verify with signing key {self.signed_by}: it was altered or forged"
            )
        return TrustedKeys(self.signers, f"signers of {self.object_key}")


def parse_keyring(
    data: bytes, plan: str, dataset: str, revision: int, object_key: str
) -> StoredKeyring:
    """The keyring, checked for shape and place; its signature is for `trusted_signers`."""

    def bad(message: str) -> NoReturn:
        raise TamperedError(f"keyring is malformed: {message}", object_key=object_key)

    try:
        doc: Any = orjson.loads(data)
    except ValueError as exc:
        bad(str(exc))
    if isinstance(doc, dict) and doc.get("format") == 1 and isinstance(doc.get("key_id"), str):
        raise UntrustedKeyError(
            f"dataset {dataset}: holds a bare wrapped key (format 1) that no signature vouches"
            f" for: written by an earlier build, or planted; data key {doc['key_id']} is refused",
            object_key=object_key,
            key_id=doc["key_id"],
        )
    if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
        bad(f"format is not {KEYRING_FORMAT!r}")
    if doc.get("version") != KEYRING_VERSION:
        raise UnknownVersionError(
            f"keyring version {doc.get('version')!r} is not supported (this build reads"
            f" {KEYRING_VERSION}: keyrings signed by the plan's signing key)",
            object_key=object_key,
        )
    if set(doc) != _FIELDS:
        bad(f"fields are {sorted(doc)}, expected {sorted(_FIELDS)}")
    if (doc["plan"], doc["dataset"]) != (plan, dataset):
        raise MisplacedChunkError(
            f"keyring belongs to plan {doc['plan']!r} dataset {doc['dataset']!r}, expected"
            f" plan {plan!r} dataset {dataset!r}",
            object_key=object_key,
        )
    if doc["revision"] != revision or type(doc["revision"]) is not int:
        raise MisplacedChunkError(
            f"keyring says revision {doc['revision']!r}, its object name {revision}",
            object_key=object_key,
        )
    if not isinstance(doc["keys"], list) or not doc["keys"]:
        bad("keys is not a non-empty list")
    keys = tuple(WrappedKey.from_dict(k, object_key=object_key) for k in doc["keys"])
    ids = [w.key_id for w in keys]
    if len(set(ids)) != len(ids) or not all(HEX_KEY_ID.fullmatch(i) for i in ids):
        bad("key ids are not distinct 32-digit hex fingerprints")
    sealing = _sealing(doc["sealing"], set(ids), bad)
    signers = _signers(doc["signers"], bad)
    if doc["signed_by"] not in {s.key_id for s in signers}:
        bad(f"signed_by {doc['signed_by']!r} is not one of its signers")
    if not isinstance(doc["signature"], str) or not HEX_SIGNATURE.fullmatch(doc["signature"]):
        bad("signature is not 128 hex digits")
    return StoredKeyring(
        plan, dataset, revision, keys, sealing, signers, doc["signed_by"], doc["signature"]
    )


def _sealing(value: Any, ids: set[str], bad: Any) -> tuple[tuple[int, str], ...]:
    """From generation 1 on, generations rising, each key one of the keyring's."""
    if not isinstance(value, list) or not value:
        bad("sealing is not a non-empty list")
    out: list[tuple[int, str]] = []
    for n, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"from_generation", "key_id"}:
            bad(f"sealing[{n}] is not {{from_generation, key_id}}")
        generation, key_id = item["from_generation"], item["key_id"]
        if type(generation) is not int or generation < 1:
            bad(f"sealing[{n}].from_generation is not an integer ≥ 1")
        if key_id not in ids:
            bad(f"sealing[{n}].key_id {key_id!r} is not one of its keys")
        if (n == 0 and generation != 1) or (out and generation <= out[-1][0]):
            bad("sealing does not start at generation 1 and rise")
        out.append((generation, key_id))
    return tuple(out)


def _signers(value: Any, bad: Any) -> tuple[SigningPublicKey, ...]:
    if not isinstance(value, list) or not value:
        bad("signers is not a non-empty list")
    out: list[SigningPublicKey] = []
    for n, item in enumerate(value):
        try:
            out.append(SigningPublicKey.from_dict(item))
        except ValueError as exc:
            bad(f"signers[{n}]: {exc}")
    if len({s.key_id for s in out}) != len(out):
        bad("signers repeat a key")
    return tuple(out)


def first_keyring(plan: str, dataset: str, first: WrappedKey) -> StoredKeyring:
    """A new dataset's keyring (revision 0, unsigned): its first data key seals from
    generation 1."""
    return StoredKeyring(plan, dataset, 0, (first,), ((1, first.key_id),))

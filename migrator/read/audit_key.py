"""Which signing keys an audit trusts (docs/FORMAT.md §11.1): the plan's, asked of its key
service, or those of an audit key file `migrator keys audit-key` exported, which holds public
keys only. A dataset's keyring, once its own signature verifies with one of them, adds the
earlier signing keys it lists, so segments signed before a signing key was rotated still verify.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migrator.codec.ledger import LedgerKeys
from migrator.errors import FormatError, MissingObjectError, UntrustedKeyError
from migrator.keys.keyring import Keyring, open_keyring, plan_trust
from migrator.keys.provider import KeyProvider
from migrator.keys.signing import (
    SIGNATURE_ALGORITHM,
    AnyOf,
    SignatureVerifier,
    SigningPublicKey,
    TrustedKeys,
)
from migrator.read.exported_file import exported_bytes, file_error, read_exported
from migrator.repository.keyrings import read_keyring
from migrator.stores.base import ObjectStore

AUDIT_KEY_FORMAT = "migrator/audit-key"
AUDIT_KEY_VERSION = 2  # 1: one Ed25519 key per dataset, derived from its first data key


@dataclass
class DatasetTrust:
    """What an audit of one dataset checks signatures with, and what it found on the way."""

    trust: SignatureVerifier | None = None  # None: the dataset was never migrated
    keyring: Keyring | None = None  # unwrapped and vouched for: only with the plan's KEK
    tags: LedgerKeys | None = None  # plain tags, to compare manifests with entries
    key_ids: list[str] = field(default_factory=list)  # the signing keys known by name
    keyring_object: str | None = None
    problem: str | None = None  # why the keyring is not vouched for


def dataset_trust(
    store: ObjectStore,
    plan: str,
    dataset: str,
    *,
    provider: KeyProvider | None,
    audit_keys: TrustedKeys | None,
) -> DatasetTrust:
    """With the plan's KEK (`provider`) the keyring is opened; with an audit key file only its
    signature is checked. A keyring no trusted key signed is a problem to report, and the
    ledger is then checked with the trusted keys alone."""
    if audit_keys is not None:
        base: SignatureVerifier = audit_keys
    elif provider is not None:
        base = plan_trust(provider)
    else:
        raise ValueError("audit with the plan's KEK or an audit key file")
    found = DatasetTrust()
    try:
        stored = read_keyring(store, plan, dataset)
    except MissingObjectError:
        return found
    except FormatError as exc:
        found.trust, found.problem = base, str(exc)
        found.keyring_object = exc.object_key
        return found
    found.keyring_object = stored.object_key
    try:
        if provider is not None:
            found.keyring, _ = open_keyring(stored, provider, base)
            signers = found.keyring.signers
            found.tags = LedgerKeys(found.keyring.first)
        else:
            signers = stored.trusted_signers(base)
    except UntrustedKeyError as exc:
        found.trust, found.problem = base, str(exc).removeprefix(f"{stored.object_key}: ")
        return found
    found.trust = AnyOf([base, signers])
    found.key_ids = [k.key_id for k in signers.keys]
    return found


def audit_key_document(plan: str, keys: Sequence[SigningPublicKey]) -> bytes:
    """What `migrator keys audit-key` writes: public keys only, nothing secret."""
    signing_keys = [k.as_dict() for k in keys]
    return exported_bytes(
        AUDIT_KEY_FORMAT, AUDIT_KEY_VERSION, {"plan": plan, "signing_keys": signing_keys}
    )


def read_audit_key_file(path: Path, plan: str) -> TrustedKeys:
    """The signing keys in an exported file; a UsageError names what is wrong."""
    bad = functools.partial(file_error, path)
    doc = read_exported(path, "audit key file", AUDIT_KEY_FORMAT)
    if doc.get("version") != AUDIT_KEY_VERSION:
        raise bad(
            f"audit key file version {doc.get('version')!r} is not supported (this build reads"
            f" {AUDIT_KEY_VERSION}: {SIGNATURE_ALGORITHM} signing keys); export it again with"
            " `migrator keys audit-key`"
        )
    if set(doc) != {"format", "version", "plan", "signing_keys"}:
        raise bad(f"fields are {sorted(doc)}, expected format, plan, signing_keys, version")
    if doc["plan"] != plan:
        raise bad(f"holds the audit keys of plan {doc['plan']!r}, not {plan!r}")
    listed = doc["signing_keys"]
    if not isinstance(listed, list) or not listed:
        raise bad("signing_keys is not a non-empty list")
    keys = []
    for n, item in enumerate(listed):
        try:
            keys.append(SigningPublicKey.from_dict(item))
        except ValueError as exc:
            raise bad(f"signing_keys[{n}]: {exc}") from None
    return TrustedKeys(keys, f"audit key file {path.name}")

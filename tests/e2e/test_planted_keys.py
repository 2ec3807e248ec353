"""Keys only the owner could have made, and a ledger only the owner could have signed (local
provider; the same attacks against KMS and Key Vault are in
tests/integration/test_keys_signing_kms.py and tests/e2e/test_keys_azure_keyvault_signing.py).

Someone who can write the destination, or even decrypt it (a restore operator holds every data
key), but cannot use the plan's signing key: a key they planted is refused by name when
sealing and reported by verify and audit; a ledger segment they forged is named by audit, with
the KEK or with the exported audit key alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest
import xxhash
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.codec.chunk import read_header
from migrator.codec.ledger import LedgerKeys, LedgerSegment, entry_link, parse_segment
from migrator.errors import KeyProviderError, UntrustedKeyError
from migrator.keys.datakey import DataKey
from migrator.keys.kekchain import KekChain
from migrator.keys.keyring import key_context, load_keyring
from migrator.keys.keyring_doc import StoredKeyring
from migrator.keys.local import LocalKeyProvider
from migrator.keys.local_signing import MemorySigner
from migrator.keys.provider import KeyProvider
from migrator.keys.signing import TrustedKeys
from migrator.read.audit import Auditor
from migrator.read.audit_key import audit_key_document, read_audit_key_file
from migrator.read.audit_report import AuditReport
from migrator.read.verify import Verifier
from migrator.repository.keyrings import read_keyring
from migrator.repository.names import keyring_object, segment_key
from migrator.repository.segments import list_segments
from migrator.stores.base import ObjectStore
from tests.e2e.test_key_rotation import NAMES, migrated, new_kek, rotate, sealed_with, use_keys
from tests.e2e.test_sync_generations import Site

# --- helpers shared with the KMS and Key Vault versions ----------------------------------


def plant_keyring(
    store: ObjectStore, plan: str, dataset: str, planted: object, *, signer: MemorySigner | None
) -> tuple[str, str]:
    """Store the next keyring revision with `planted` (a WrappedKey someone wrapped without the
    owner) added and made current from the next generation on; signed by `signer` (someone's
    own key), or, with None, carrying the owner's signer and signature from the revision it
    copies. Returns (object key, planted key id)."""
    stored = read_keyring(store, plan, dataset)
    key_id = planted.key_id  # type: ignore[attr-defined]
    forged = StoredKeyring(
        plan,
        dataset,
        stored.revision + 1,
        (*stored.keys, planted),  # type: ignore[arg-type]
        (*stored.sealing, (stored.sealing[-1][0] + 5, key_id)),
        stored.signers,
        stored.signed_by,
        stored.signature,
    )
    if signer is not None:
        forged = forged.signed(signer)
    okey = keyring_object(dataset, forged.revision)
    store.put(okey, forged.to_json())
    return okey, key_id


def audit_report(site: Site, audit_keys: TrustedKeys | None = None) -> AuditReport:
    with site.state() as state:
        return Auditor(
            site.plan,
            site.store,
            provider=None if audit_keys is not None else site.provider,
            audit_keys=audit_keys,
            state=state,
        ).audit()


def found(report: AuditReport, kind: str) -> set[str | None]:
    return {f.object_key for d in report.datasets for _, f in d.all_findings() if f.kind == kind}


def verify_problems(site: Site) -> set[tuple[str | None, str]]:
    with site.state() as state:
        report = Verifier(site.plan, site.store, site.provider, state).verify()
    return {(p.object_key, p.error) for p in report.problems}


def exported_audit_keys(site: Site, provider: KeyProvider, tmp_path: Path) -> TrustedKeys:
    """What `keys audit-key` writes, read back as an auditor would."""
    path = tmp_path / "audit-key.json"
    path.write_bytes(audit_key_document(site.plan.name, [provider.signer.public_key()]))
    return read_audit_key_file(path, site.plan.name)


def assert_planted_key_refused(site: Site, okey: str, key_id: str) -> None:
    """Sealing refuses the planted key by name; verify and audit report it."""
    with pytest.raises(UntrustedKeyError) as refused:
        site.run()
    assert refused.value.object_key == okey and refused.value.key_id == key_id
    assert key_id in str(refused.value)
    assert (okey, "UntrustedKeyError") in verify_problems(site)
    assert okey in found(audit_report(site), "untrusted-keyring")


# --- planted keys ------------------------------------------------------------------------


def test_a_bare_wrapped_key_planted_as_the_first_key_is_refused(tmp_path: Path) -> None:
    """The earlier format: a wrapped key nothing vouched for. Wrapping needs only the KEK's
    public half (Key Vault) or kms:Encrypt; here the local KEK stands in for either."""
    _, site, _ = migrated(tmp_path, syncs=0)
    okey = "videos/_keys/datakey.json"
    key, wrapped = site.provider.generate_data_key(key_context(site.plan.name, "videos"))
    site.store.put(okey, wrapped.to_json())
    assert_planted_key_refused(site, okey, key.key_id.hex())


@pytest.mark.parametrize("signed", ["copied signature", "own signing key"])
def test_a_keyring_entry_wrapped_without_the_owner_is_refused(tmp_path: Path, signed: str) -> None:
    _, site, _ = migrated(tmp_path, syncs=0)
    _, planted = site.provider.generate_data_key(key_context(site.plan.name, "profiles"))
    signer = MemorySigner.generate() if signed == "own signing key" else None
    okey, key_id = plant_keyring(site.store, site.plan.name, "profiles", planted, signer=signer)
    assert_planted_key_refused(site, okey, key_id)
    assert not sealed_with(site, "profiles/g000002/")  # nothing was sealed under it


def test_a_key_id_in_object_metadata_chooses_nothing(tmp_path: Path) -> None:
    """After `keys rotate --new-data-key`, an object planted in the next generation with the
    retired key's id in its `migrator-key-id` metadata: the next generation is sealed under the
    new key all the same, and verify and audit name the planted object."""
    live, site, _ = migrated(tmp_path)
    old = load_keyring(site.store, site.provider, site.plan.name, "profiles").current
    results = {r.dataset: r for r in rotate(site, site.provider, new_data_key=True)}
    planted = "profiles/g000003/s00001/r/00000999.mgc"
    source = next(o.key for o in site.store.list("profiles/g000002/s00001/r/"))
    site.store.put(planted, site.store.get(source), {"migrator-key-id": old.key_id.hex()})
    live.mutate()
    live.write()
    site.run()
    for name in NAMES:
        sealed = {
            read_header(site.store.get(o.key)).key_id.hex()
            for o in site.store.list(f"{name}/g000003/")
            if o.key != planted
        }
        assert sealed == {results[name].new_key}
    assert read_header(site.store.get(planted)).key_id == old.key_id  # still the planted copy
    assert (planted, "UnexpectedObjectError") in verify_problems(site)
    assert planted in found(audit_report(site), "extra-object")


def test_the_plan_signing_key_must_be_recorded_before_it_signs(tmp_path: Path) -> None:
    """A new KEK (its own signing key beside it) reads the old keyrings while the old one is in
    keys.previous, but signs nothing until `keys rotate` has recorded its key; segments the
    retired key signed still verify, through the signers the keyring lists."""
    live, site, _ = migrated(tmp_path, syncs=0)
    old, new = site.provider, new_kek(tmp_path)
    use_keys(site, KekChain(new, [old]))
    site.verify_ok()
    live.mutate()
    live.write()
    with pytest.raises(KeyProviderError, match="run `migrator keys rotate`"):
        site.run()
    rotate(site, site.provider)
    use_keys(site, new)  # the old KEK and its signing key retired
    site.run()
    site.verify_ok()
    report = audit_report(site)
    assert report.ok, [f for d in report.datasets for f in d.all_findings()]
    old_id, new_id = old.signer.public_key().key_id, new.signer.public_key().key_id
    assert all(d.verify_key == f"{old_id}, {new_id}" for d in report.datasets)
    stored = read_keyring(site.store, site.plan.name, "videos")
    assert stored.signed_by == new_id and [s.key_id for s in stored.signers] == [old_id, new_id]


# --- forged ledger segments --------------------------------------------------------------


def _old_derivation_signature(first: bytes, message: bytes) -> bytes:
    """How segments were signed before: Ed25519 under HKDF of the first data key, which every
    holder of the data keys can compute."""
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"migrator/v1/audit-ledger/signing-key",
    ).derive(first)
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def forge_segment(site: Site, first: DataKey, plan_key_id: str, how: str) -> str:
    """A restore operator's forgery: it holds every data key (`first` among them) but not the
    signing key. It copies a chunk to a new name and appends a segment whose entry adds it."""
    dataset, shard = "profiles", 1
    number, okey = list_segments(site.store, dataset)[0][shard][-1]
    last = parse_segment(
        site.store.get(okey),
        plan=site.plan.name,
        dataset=dataset,
        shard=shard,
        segment=number,
        object_key=okey,
    )
    template = next(e for e in last.entries if e.kind == "add")
    planted = f"{dataset}/g{template.generation:06d}/s{shard:05d}/r/00000999.mgc"
    data = site.store.get(template.object_key)
    site.store.put(planted, data)
    entry = dataclasses.replace(
        template,
        index=last.first_index + last.count,
        object_key=planted,
        stored_xxh3=xxhash.xxh3_128_hexdigest(data),
        link="",
    )
    entry = dataclasses.replace(entry, link=entry_link(last.head_link, entry))
    own = MemorySigner.generate()
    names = own.public_key().key_id if how == "own signing key" else plan_key_id
    segment = LedgerSegment(
        site.plan.name,
        dataset,
        shard,
        number + 1,
        entry.index,
        1,
        last.head_link,
        entry.link,
        names,
        "",
        (),
    )
    header = segment.header()
    if how == "old derivation":
        del header["signing_key"]
        header["version"] = 1
        unsigned = {k: v for k, v in header.items() if k != "signature"}
        message = b"migrator/v1/audit-ledger/segment\n" + orjson.dumps(
            unsigned, option=orjson.OPT_SORT_KEYS
        )
        header["signature"] = _old_derivation_signature(first.secret, message).hex()
    else:
        header["signature"] = LedgerKeys(first, own).sign(segment.signed_bytes()).hex()
    body = entry.body() | {"link": entry.link}
    forged = b"\n".join(orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in (header, body))
    key = segment_key(dataset, shard, number + 1)
    site.store.put(key, forged + b"\n")
    return key


@pytest.mark.parametrize("how", ["own signing key", "claims the plan's key", "old derivation"])
def test_a_holder_of_the_data_keys_cannot_forge_a_segment(tmp_path: Path, how: str) -> None:
    _, site, _ = migrated(tmp_path, syncs=0)
    provider = site.provider
    clean = audit_report(site)
    assert clean.ok
    audit_keys = exported_audit_keys(site, provider, tmp_path)
    # The forger: the KEK file (a copy of the data keys), no signing key file.
    forger_dir = tmp_path / "forger"
    forger_dir.mkdir()
    kek = forger_dir / "kek.key"
    kek.write_bytes(Path(site.plan.keys.kek_file or "").read_bytes())
    kek.chmod(0o600)
    forger = LocalKeyProvider(kek)  # makes a signing key of its own: not the plan's
    with pytest.raises(UntrustedKeyError, match="which the plan does not trust"):
        load_keyring(site.store, forger, site.plan.name, "profiles")
    first = forger.unwrap(read_keyring(site.store, site.plan.name, "profiles").keys[0])
    key = forge_segment(site, first, provider.signer.public_key().key_id, how)
    kind = "malformed" if how == "old derivation" else "forged"
    for report in (audit_report(site), audit_report(site, audit_keys)):
        assert not report.ok
        assert key in found(report, kind), [f for d in report.datasets for f in d.all_findings()]


def test_the_exported_key_verifies_with_nothing_else(tmp_path: Path) -> None:
    _, site, _ = migrated(tmp_path, syncs=0)
    audit_keys = exported_audit_keys(site, site.provider, tmp_path)
    report = audit_report(site, audit_keys)
    assert report.ok
    # A keyring altered by someone who then signs it with their own key.
    stored = read_keyring(site.store, site.plan.name, "videos")
    altered = dataclasses.replace(stored, sealing=((1, stored.keys[0].key_id),)).signed(
        MemorySigner.generate()
    )
    site.store.put(stored.object_key, altered.to_json())
    report = audit_report(site, audit_keys)
    assert found(report, "untrusted-keyring") == {stored.object_key}


@pytest.mark.parametrize("change", ["sealing", "signers", "signed_by"])
def test_any_change_to_a_signed_keyring_is_refused(tmp_path: Path, change: str) -> None:
    """Each change leaves the keyring well formed and its keys unwrappable: the signature
    alone refuses it."""
    _, site, _ = migrated(tmp_path, syncs=0)
    okey = "metadata/_keys/datakey.json"
    doc = orjson.loads(site.store.get(okey))
    key_id = doc["keys"][0]["key_id"]
    if change == "sealing":
        doc["sealing"].append({"from_generation": 7, "key_id": key_id})
        why = "does not verify with signing key"
    elif change == "signers":
        doc["signers"][0]["source"] = "local, trust me"
        why = "does not verify with signing key"
    else:
        other = MemorySigner.generate().public_key()
        doc["signers"].append(other.as_dict())
        doc["signed_by"] = other.key_id
        why = f"signing key {other.key_id}, which the plan does not trust"
    site.store.put(okey, orjson.dumps(doc))
    with pytest.raises(UntrustedKeyError, match=why) as refused:
        load_keyring(site.store, site.provider, site.plan.name, "metadata")
    assert refused.value.object_key == okey

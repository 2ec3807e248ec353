"""The local provider's signing key file (docs/FORMAT.md §10.6) and the public-key forms every
provider shares: made 0600 and never overwritten, one key however many processes race to make
it, a corrupt or exposed file refused by name, and no secret in any output."""

from __future__ import annotations

import base64
import json
import multiprocessing
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from migrator.errors import KeyProviderError, UsageError
from migrator.keys.local import LocalKeyProvider
from migrator.keys.local_signing import (
    SIGNING_KEY_HEADER,
    LocalSigner,
    MemorySigner,
    default_signing_key_file,
    init_signing_key_file,
)
from migrator.keys.signing import SigningPublicKey, public_key_der, sign_checked
from migrator.read.audit_key import read_audit_key_file
from tests.planfiles import run_cli

P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def test_made_private_beside_the_kek_and_never_overwritten(tmp_path: Path) -> None:
    kek = tmp_path / "keys" / "kek.key"
    path = default_signing_key_file(kek)
    assert path == tmp_path / "keys" / "kek.signing.key"
    key_id = init_signing_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(SIGNING_KEY_HEADER)
    signer = LocalSigner(path)
    assert signer.public_key().key_id == key_id
    content = path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        init_signing_key_file(path)
    assert init_signing_key_file(path, exist_ok=True) == key_id
    assert path.read_bytes() == content
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def _make(path: str) -> str:
    return LocalSigner(Path(path), create=True).public_key().key_id


def test_processes_racing_to_make_it_all_get_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "kek.signing.key"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_make, [str(path)] * 8)
    assert len(set(ids)) == 1 and ids[0] == LocalSigner(path).public_key().key_id


def test_the_current_kek_makes_its_signing_key_an_earlier_one_does_not(tmp_path: Path) -> None:
    from migrator.keys.local import init_kek_file

    init_kek_file(tmp_path / "old.key")
    earlier = LocalKeyProvider(tmp_path / "old.key", current=False)
    assert earlier.signer.public_key_for("0" * 32) is None  # trusts nothing, makes nothing
    assert not (tmp_path / "old.signing.key").exists()
    current = LocalKeyProvider(tmp_path / "old.key")
    key_id, _ = sign_checked(current.signer, b"m")
    assert (tmp_path / "old.signing.key").exists()
    assert earlier.signer.public_key_for(key_id) is not None  # read once it exists


@pytest.mark.parametrize(
    ("content", "mode", "error"),
    [
        (None, 0o644, "readable by group or others"),
        (b"migrator-kek-v1 " + base64.b64encode(bytes(32)) + b"\n", 0o600, "not a migrator"),
        (SIGNING_KEY_HEADER + b"not base64!\n", 0o600, "corrupt"),
        (SIGNING_KEY_HEADER + base64.b64encode(bytes(31) + b"\1")[:40] + b"\n", 0o600, "corrupt"),
        (SIGNING_KEY_HEADER + base64.b64encode(bytes(32)) + b"\n", 0o600, "not a P-256 key"),
        (
            SIGNING_KEY_HEADER + base64.b64encode(P256_ORDER.to_bytes(32, "big")) + b"\n",
            0o600,
            "not a P-256 key",
        ),
    ],
    ids=["exposed", "kek-file", "not-base64", "short", "zero", "order"],
)
def test_a_bad_file_is_refused_by_name(
    tmp_path: Path, content: bytes | None, mode: int, error: str
) -> None:
    path = tmp_path / "kek.signing.key"
    init_signing_key_file(path)
    if content is not None:
        path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(KeyProviderError, match=error) as err:
        LocalSigner(path).sign(b"m")
    assert str(path) in str(err.value)


def test_a_missing_file_of_an_earlier_kek_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="signing key file not found"):
        LocalSigner(tmp_path / "gone.signing.key").public_key()


def test_public_keys_are_checked_when_read() -> None:
    signer = MemorySigner.generate("local")
    doc = signer.public_key().as_dict()
    assert SigningPublicKey.from_dict(doc) == signer.public_key()
    for change, error in [
        ({"key_id": "0" * 32}, "not its public key's fingerprint"),
        ({"algorithm": "ed25519"}, "is not 'ecdsa-p256-sha256'"),
        ({"extra": 1}, "fields are not"),
        ({"public_key": "AAAA"}, "not a DER SubjectPublicKeyInfo"),
    ]:
        with pytest.raises(ValueError, match=error):
            SigningPublicKey.from_dict(doc | change)
    p384 = public_key_der(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(ValueError, match="not a P-256"):
        SigningPublicKey(p384, "elsewhere")
    message, (_, signature) = b"m", sign_checked(signer, b"m")
    public = signer.public_key()
    assert public.verify(message, signature)
    assert not public.verify(message + b"!", signature)
    assert not public.verify(message, signature[:63])
    assert not public.verify(message, bytes(64))


def test_an_audit_key_file_of_the_earlier_form_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit-key.json"
    earlier = {"format": "migrator/audit-key", "version": 1, "algorithm": "ed25519"}
    path.write_text(json.dumps(earlier | {"plan": "p", "datasets": {"d": "ab" * 32}}))
    with pytest.raises(UsageError, match=r"version 1 is not supported.*export it again"):
        read_audit_key_file(path, "p")


def test_keys_init_makes_both_files_and_prints_no_secret(tmp_path: Path) -> None:
    done = run_cli("keys", "init", "keys/kek.key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    signing = tmp_path / "keys" / "kek.signing.key"
    assert stat.S_IMODE(signing.stat().st_mode) == 0o600
    key_id = LocalSigner(signing).public_key().key_id
    assert f"created signing key keys/kek.signing.key (id {key_id})" in done.stdout
    secret = signing.read_bytes()[len(SIGNING_KEY_HEADER) :].strip().decode()
    scalar = base64.b64decode(secret)
    for shown in (secret, scalar.hex(), str(int.from_bytes(scalar, "big"))):
        assert shown not in done.stdout + done.stderr
    (tmp_path / "keys" / "kek.key").unlink()  # a new KEK keeps the signing key beside it
    again = run_cli("keys", "init", "keys/kek.key", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"kept the signing key keys/kek.signing.key (id {key_id})" in again.stdout
    assert repr(LocalSigner(signing)) == f"LocalSigner({str(signing)!r})"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(LocalSigner(signing))

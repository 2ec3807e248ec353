from __future__ import annotations

import base64
import dataclasses
import pickle
import stat
from pathlib import Path

import pytest

from migrator.errors import KeyProviderError, UsageError, WrongKeyError
from migrator.keys.datakey import DataKey
from migrator.keys.keyring import key_context
from migrator.keys.local import KEK_HEADER, LocalKeyProvider, init_kek_file
from migrator.keys.provider import WrappedKey

CONTEXT = key_context("plan-1", "profiles")


@pytest.fixture
def kek_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "kek"
    init_kek_file(path)
    return path


@pytest.fixture
def provider(kek_file: Path) -> LocalKeyProvider:
    return LocalKeyProvider(kek_file)


def kek_secret(path: Path) -> bytes:
    return base64.b64decode(path.read_bytes()[len(KEK_HEADER) :].strip())


def secret_forms(secret: bytes) -> list[str]:
    return [secret.hex(), repr(secret), base64.b64encode(secret).decode()]


def test_init_creates_a_0600_file_and_returns_its_id(tmp_path: Path) -> None:
    path = tmp_path / "new" / "kek"
    kek_id = init_kek_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(KEK_HEADER)
    assert len(kek_secret(path)) == 32
    assert LocalKeyProvider(path).kek_id == kek_id
    assert len(kek_id) == 16


def test_init_refuses_to_overwrite(kek_file: Path) -> None:
    before = kek_file.read_bytes()

    with pytest.raises(UsageError, match="refusing to overwrite"):
        init_kek_file(kek_file)
    assert kek_file.read_bytes() == before


def test_two_files_have_different_keys(tmp_path: Path) -> None:
    assert init_kek_file(tmp_path / "a") != init_kek_file(tmp_path / "b")


def test_round_trip(provider: LocalKeyProvider) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)

    assert wrapped.provider == "local"
    assert wrapped.kek_id == provider.kek_id
    assert wrapped.key_id == key.key_id.hex()
    assert wrapped.context == CONTEXT
    assert key.secret not in wrapped.ciphertext
    assert provider.unwrap(WrappedKey.from_json(wrapped.to_json())) == key


def test_each_data_key_is_fresh(provider: LocalKeyProvider) -> None:
    first, _ = provider.generate_data_key(CONTEXT)
    second, _ = provider.generate_data_key(CONTEXT)
    assert first != second


def test_another_kek_is_a_wrong_key(provider: LocalKeyProvider, tmp_path: Path) -> None:
    other_file = tmp_path / "other-kek"
    init_kek_file(other_file)
    other = LocalKeyProvider(other_file)
    _, wrapped = other.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match=other.kek_id):
        provider.unwrap(wrapped)
    # Even when the record claims this KEK's id, the AEAD refuses it.
    with pytest.raises(WrongKeyError, match="altered"):
        provider.unwrap(dataclasses.replace(wrapped, kek_id=provider.kek_id))


@pytest.mark.parametrize(
    "context",
    [
        {**CONTEXT, "migrator:dataset": "videos"},
        {"migrator:plan": "plan-1"},
        {**CONTEXT, "extra": "x"},
    ],
    ids=["changed", "dropped", "added"],
)
def test_altered_context_is_a_wrong_key(
    provider: LocalKeyProvider, context: dict[str, str]
) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)

    with pytest.raises(WrongKeyError, match="context altered"):
        provider.unwrap(dataclasses.replace(wrapped, context=context))


def test_altered_ciphertext_or_key_id_is_a_wrong_key(provider: LocalKeyProvider) -> None:
    _, wrapped = provider.generate_data_key(CONTEXT)
    blob = bytearray(wrapped.ciphertext)
    blob[20] ^= 1

    with pytest.raises(WrongKeyError):
        provider.unwrap(dataclasses.replace(wrapped, ciphertext=bytes(blob)))
    with pytest.raises(WrongKeyError):
        provider.unwrap(dataclasses.replace(wrapped, key_id="00" * 16))
    with pytest.raises(WrongKeyError, match="'aws-kms'"):
        provider.unwrap(dataclasses.replace(wrapped, provider="aws-kms"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_file_readable_by_others_is_refused(kek_file: Path, mode: int) -> None:
    kek_file.chmod(mode)

    with pytest.raises(KeyProviderError, match=f"mode {mode:o}.*chmod 600"):
        LocalKeyProvider(kek_file)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="migrator keys init"):
        LocalKeyProvider(tmp_path / "absent")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "not a migrator KEK file"),
        (b"-----BEGIN PRIVATE KEY-----\n", "not a migrator KEK file"),
        (KEK_HEADER + b"not base64!\n", "corrupt"),
        (KEK_HEADER + base64.b64encode(b"short") + b"\n", "wrong key length"),
        (KEK_HEADER + base64.b64encode(bytes(33)) + b"\n", "wrong key length"),
    ],
    ids=["empty", "other-format", "bad-base64", "short", "long"],
)
def test_corrupt_file_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "kek"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(KeyProviderError, match=problem) as recorded:
        LocalKeyProvider(path)
    assert str(path) in str(recorded.value)


def test_no_secret_in_repr_str_or_errors(provider: LocalKeyProvider, kek_file: Path) -> None:
    key, wrapped = provider.generate_data_key(CONTEXT)
    texts = [repr(key), str(key), repr(provider), str(provider), provider.describe()]
    texts += [repr(wrapped), wrapped.to_json().decode()]
    for bad in (
        dataclasses.replace(wrapped, context={"migrator:plan": "other"}),
        dataclasses.replace(wrapped, key_id="00" * 16),
        dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext[:-1]),
        dataclasses.replace(wrapped, kek_id="0" * 16),
    ):
        with pytest.raises(WrongKeyError) as recorded:
            provider.unwrap(bad)
        texts += [str(recorded.value), repr(recorded.value)]
    kek_file.chmod(0o644)
    with pytest.raises(KeyProviderError) as refused:
        LocalKeyProvider(kek_file)
    texts.append(str(refused.value))

    secrets = secret_forms(key.secret) + secret_forms(kek_secret(kek_file))
    for text in texts:
        for form in secrets:
            assert form not in text


def test_data_key_cannot_be_pickled(provider: LocalKeyProvider) -> None:
    key, _ = provider.generate_data_key(CONTEXT)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert isinstance(key, DataKey)

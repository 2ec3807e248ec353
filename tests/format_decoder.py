"""An independent decoder of a migrator destination, written from docs/FORMAT.md alone.

It imports nothing from `migrator`: only the primitives FORMAT.md names (XXH3, HMAC, HKDF,
AES-256-GCM, zstd, JSON). What it does not take from the spec it does not do: it reads the local
KEK file and wrapped keys (§10.1), not KMS or Key Vault, and leaves the keyring's own
authentication (§10.3, step 4) and the audit ledger (§11) to their tests. Every other check is
the reader's checklist (§12), in its order; a failed one raises `Refused`, naming the object key
and the step. Chunk layout and key material live here; datasets are read in format_reader.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RECORDS, OBJECT_PART, MANIFEST, GENERATION, DEAD_LETTERS = 1, 2, 3, 4, 5
ZERO_TAG = bytes(16)


class Refused(Exception):
    """A check of FORMAT.md failed: `step` says which, `object_key` where."""

    def __init__(self, step: str, object_key: str, detail: str = "") -> None:
        super().__init__(f"{object_key}: {step}{': ' + detail if detail else ''}")
        self.step = step
        self.object_key = object_key


# --- Conventions ---------------------------------------------------------------------------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_SHORT_ESCAPES["\r"] = "\\r"


def canonical_json(value: Any) -> bytes:
    """Canonical JSON exactly as FORMAT.md's Conventions state it."""
    if value is None:
        return b"null"
    if value is True or value is False:
        return b"true" if value else b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in _SHORT_ESCAPES:
                out.append(_SHORT_ESCAPES[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return ('"' + "".join(out) + '"').encode()
    if isinstance(value, list):
        return b"[" + b",".join(canonical_json(v) for v in value) + b"]"
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda item: item[0].encode())
        return (
            b"{"
            + b",".join(canonical_json(k) + b":" + canonical_json(v) for k, v in members)
            + b"}"
        )
    raise TypeError(f"no canonical JSON for {type(value).__name__}")


def hmac256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def hkdf(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def xxh3_128_hex(data: bytes) -> str:
    return xxhash.xxh3_128_digest(data).hex()


# --- §2: keys ------------------------------------------------------------------------------


def key_id(data_key: bytes) -> bytes:
    return hmac256(data_key, b"migrator/v1/key-id")[:16]


def name_tag(data_key: bytes, name: str) -> bytes:
    name_key = hkdf(data_key, None, b"migrator/v1/name-tag-key", 32)
    return hmac256(name_key, name.encode())[:16]


def read_kek_file(path: Path) -> bytes:
    """§10.1, "Local KEK file"."""
    if path.stat().st_mode & 0o077:
        raise Refused("10.1 KEK file readable by others", str(path))
    raw = path.read_bytes()
    if not raw.startswith(b"migrator-kek-v1 "):
        raise Refused("10.1 not a KEK file", str(path))
    try:
        kek = base64.b64decode(raw[16:].strip(), validate=True)
    except ValueError:
        raise Refused("10.1 KEK not base64", str(path)) from None
    if len(kek) != 32:
        raise Refused("10.1 KEK not 32 bytes", str(path))
    return kek


def kek_id(kek: bytes) -> str:
    return hmac256(kek, b"migrator/v1/kek-id").hex()[:16]


def unwrap_local(kek: bytes, entry: dict[str, Any], object_key: str) -> bytes:
    """A §10.1 wrapped key, local provider: AES-256-GCM under the KEK, AAD canonical JSON."""
    if entry.get("format") != 1 or entry.get("provider") != "local":
        raise Refused("10.1 not a local wrapped key", object_key)
    if entry["kek_id"] != kek_id(kek):
        raise Refused("10.1 wrapped under another KEK", object_key)
    blob = base64.b64decode(entry["ciphertext"], validate=True)
    aad = canonical_json(
        {"context": entry["context"], "kek_id": entry["kek_id"], "key_id": entry["key_id"]}
    )
    try:
        data_key = AESGCM(kek).decrypt(blob[:12], blob[12:], aad)
    except InvalidTag:
        raise Refused("10.1 wrapped key does not open", object_key) from None
    if key_id(data_key).hex() != entry["key_id"]:
        raise Refused("10.1 fingerprint differs from key_id", object_key)
    return data_key


def data_keys(root: Path, kek: bytes, plan: str, dataset: str) -> dict[bytes, bytes]:
    """Every data key of the dataset, by key id (§10.3, steps 1-3; §12 steps 2-3)."""
    folder = root / dataset / "_keys"
    # The highest keyring revision, else revision 0, datakey.json: a keyring of the same form.
    path = ([folder / "datakey.json", *sorted(folder.glob("keyring-*.json"))])[-1]
    okey = f"{dataset}/_keys/{path.name}"
    doc = json.loads(path.read_bytes())
    if doc["format"] != "migrator/keyring" or (doc["plan"], doc["dataset"]) != (plan, dataset):
        raise Refused("10.3 keyring of another plan or dataset", okey)
    entries = doc["keys"]
    keys: dict[bytes, bytes] = {}
    for entry in entries:
        if entry["context"] != {"migrator:plan": plan, "migrator:dataset": dataset}:
            raise Refused("10.3 key bound to another plan or dataset", okey)
        data_key = unwrap_local(kek, entry, okey)
        keys[key_id(data_key)] = data_key
    return keys


# --- §1-§3: chunks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    kind: int
    plan: str
    dataset: str
    generation: int
    shard: int
    sequence: int
    tag: bytes = ZERO_TAG

    def encode(self) -> bytes:
        plan, dataset = self.plan.encode(), self.dataset.encode()
        return (
            struct.pack(">BH", self.kind, len(plan))
            + plan
            + struct.pack(">H", len(dataset))
            + dataset
            + struct.pack(">IIQ", self.generation, self.shard, self.sequence)
            + self.tag
        )


def _derive(data_key: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    return (
        hkdf(data_key, salt, b"migrator/v1/chunk/aes-256-gcm-key", 32),
        hkdf(data_key, salt, b"migrator/v1/chunk/aes-256-gcm-nonce", 12),
        hkdf(data_key, salt, b"migrator/v1/chunk/commitment-key", 32),
    )


def seal(plain: bytes, identity: Identity, data_key: bytes, salt: bytes) -> bytes:
    """§1-§2 from the writer's side: what an earlier upload of one identity looks like."""
    compressed = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(plain)
    aes_key, nonce, commit_key = _derive(data_key, salt)
    head = b"MGRC" + bytes([1, 1]) + identity.encode() + key_id(data_key) + salt
    head += struct.pack(">QQ", len(plain), len(compressed) + 16)
    head += hmac256(commit_key, head)
    head += xxhash.xxh3_64_digest(head)
    return head + AESGCM(aes_key).encrypt(nonce, compressed, head + identity.encode())


def sealing_key(data: bytes, keys: dict[bytes, bytes]) -> bytes:
    """The data key a decoded chunk's header names (§1.1 key_id)."""
    p = int.from_bytes(data[7:9])
    d = int.from_bytes(data[9 + p : 11 + p])
    return keys[data[43 + p + d : 59 + p + d]]


def decode(
    data: bytes,
    expected: Identity,
    keys: dict[bytes, bytes],
    object_key: str,
    plain_size: int | None = None,
) -> bytes:
    """§3, steps 1-18, with the key the header names (§10.3, step 5); `plain_size`: what the
    manifest lists, when it lists the chunk (§12, step 18)."""

    def refuse(step: str, detail: str = "") -> Refused:
        return Refused(f"3.{step}", object_key, detail)

    if len(data) < 147:
        raise refuse("1 truncated")
    if data[:4] != b"MGRC":
        raise refuse("2 magic")
    if data[4] != 1:
        raise refuse("3 unknown version")
    plan_len = int.from_bytes(data[7:9])
    dataset_len = int.from_bytes(data[9 + plan_len : 11 + plan_len]) if len(data) >= 11 else 0
    size = 147 + plan_len + dataset_len
    if len(data) < size or 11 + plan_len > len(data):
        raise refuse("4 header truncated")
    header = data[:size]
    p, d = plan_len, dataset_len
    if xxhash.xxh3_64_digest(header[: 139 + p + d]) != header[139 + p + d :]:
        raise refuse("5 header checksum")
    if data[5] != 1:
        raise refuse("6 unknown compression")
    try:
        header[9 : 9 + p].decode()
        header[11 + p : 11 + p + d].decode()
    except UnicodeDecodeError:
        raise refuse("7 names not UTF-8") from None
    if data[6] not in (1, 2, 3, 4, 5):
        raise refuse("7 kind")
    declared_size, cipher_size = struct.unpack(">QQ", header[91 + p + d : 107 + p + d])
    if cipher_size < 16 or declared_size > 2**31:
        raise refuse("8 sizes")
    want = expected.encode()
    if header[6 : 43 + p + d] != want:
        raise refuse("9 misplaced")
    data_key = keys.get(header[43 + p + d : 59 + p + d])
    if data_key is None:
        raise refuse("10 wrong key")
    aes_key, nonce, commit_key = _derive(data_key, header[59 + p + d : 91 + p + d])
    if not hmac.compare_digest(
        hmac256(commit_key, header[: 107 + p + d]), header[107 + p + d : 139 + p + d]
    ):
        raise refuse("11 commitment")
    if len(data) < size + cipher_size:
        raise refuse("12 truncated")
    if len(data) > size + cipher_size:
        raise refuse("13 trailing bytes")
    try:
        compressed = AESGCM(aes_key).decrypt(nonce, data[size:], header + want)
    except InvalidTag:
        raise refuse("14 authentication") from None
    if plain_size is not None and declared_size != plain_size:
        raise refuse("15 not the size the manifest lists")
    plain_size = declared_size
    try:
        declared = zstandard.frame_content_size(compressed)
    except zstandard.ZstdError:
        raise refuse("15 no zstd frame") from None
    if declared != plain_size:
        raise refuse("15 content size")
    if plain_size > len(compressed) * (131_072 // 3 + 1):
        raise refuse("16 impossible expansion")
    stream = zstandard.ZstdDecompressor().decompressobj()
    try:
        plain = stream.decompress(compressed)
    except zstandard.ZstdError:
        raise refuse("17 zstd") from None
    if stream.unused_data or len(plain) > plain_size:
        raise refuse("17 bytes after the frame")
    if len(plain) != plain_size:
        raise refuse("18 plaintext size")
    return plain

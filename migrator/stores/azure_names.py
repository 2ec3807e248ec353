"""The names Azure Blob constrains: metadata names must be C# identifiers, and the blocks of
one blob must all have ids of one length.

Metadata names are escaped byte by byte ("record-count" is stored as "record_2dcount") and
read back unchanged. Block names are "<upload id>-<part number>", so an upload's blocks are
found again in a blob's block list among anyone else's.
"""

from __future__ import annotations

import re
import secrets

MAX_BLOCKS = 50_000  # Azure's limit of committed blocks a blob

# One length for every upload, as Azure requires of a blob's uncommitted blocks. The SDK
# base64-encodes them into the wire block ids.
_UPLOAD_ID = re.compile(r"[0-9a-f]{16}")
_BLOCK_NAME = re.compile(r"([0-9a-f]{16})-(\d{6})")
_METADATA_NAME_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ESCAPED_NAME = re.compile(r"(?:[A-Za-z0-9]|_[0-9a-f]{2})*")


def new_upload_id() -> str:
    """A fresh upload id, the first half of each of its block names."""
    return secrets.token_hex(8)


def block_name(upload_id: str, number: int) -> str:
    """The block of part `number` of an upload; the SDK base64-encodes it as the block id."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise ValueError(f"not an upload id of this store: {upload_id!r}")
    if not 1 <= number <= MAX_BLOCKS:
        raise ValueError(f"part number {number} is outside 1..{MAX_BLOCKS}")
    return f"{upload_id}-{number:06d}"


def parse_block_name(name: str) -> tuple[str, int] | None:
    """(upload id, part number) of a block this store staged; None for anyone else's block."""
    match = _BLOCK_NAME.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else None


def encode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata with each name escaped into an identifier Azure accepts."""
    return {_encode_name(name): value for name, value in metadata.items()}


def decode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata as it was given to `encode_metadata`."""
    return {_decode_name(name): value for name, value in metadata.items()}


def _encode_name(name: str) -> str:
    escaped = [
        chr(byte) if byte in _METADATA_NAME_SAFE else f"_{byte:02x}" for byte in name.encode()
    ]
    if escaped and escaped[0].isdigit():  # an identifier cannot start with a digit
        escaped[0] = f"_{ord(escaped[0]):02x}"
    return "".join(escaped)


def _decode_name(name: str) -> str:
    """The inverse of _encode_name; a name this store did not write comes back as it is."""
    if not _ESCAPED_NAME.fullmatch(name):
        return name
    raw = re.sub(rb"_([0-9a-f]{2})", lambda match: bytes.fromhex(match[1].decode()), name.encode())
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return name

"""Reading the operator's local key files (the KEK, the signing key): a header line, then the
key in base64, in a file no one but its owner may read."""

from __future__ import annotations

import base64
from pathlib import Path

from migrator.errors import KeyProviderError


def read_key_file(path: Path, header: bytes, what: str, missing_hint: str) -> bytes:
    """The key's bytes; KeyProviderError, naming the file as `what`, if the file is missing,
    unreadable, open to group or others, or not such a file. The caller checks the length."""
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyProviderError(f"{path}: {what} not found ({missing_hint})") from None
    except OSError as exc:
        raise KeyProviderError(f"{path}: cannot read {what} ({exc.strerror})") from None
    if st.st_mode & 0o077:
        raise KeyProviderError(
            f"{path}: {what} is readable by group or others (mode {st.st_mode & 0o777:o});"
            " run chmod 600 on it"
        )
    if not raw.startswith(header):
        raise KeyProviderError(f"{path}: not a migrator {what}")
    try:
        return base64.b64decode(raw[len(header) :].strip(), validate=True)
    except ValueError:
        raise KeyProviderError(f"{path}: {what} is corrupt") from None

"""The hex strings signed documents carry (a keyring, a ledger segment header): one spelling
of what a key id and a signature look like, so every reader rejects the same malformed ones."""

from __future__ import annotations

import re

HEX_KEY_ID = re.compile(r"[0-9a-f]{32}")  # 16 bytes
HEX_SIGNATURE = re.compile(r"[0-9a-f]{128}")  # 64 bytes

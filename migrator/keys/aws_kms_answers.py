"""How a KMS answer is read, for the KEK provider (aws_kms.py) and the signing key
(aws_kms_signing.py) alike: an answer cut short is asked again, and a failure becomes one
KeyProviderError line with a hint for the key states an operator can fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from migrator.errors import KeyProviderError

INCOMPLETE_ATTEMPTS = 4  # answers cut short, parsed by botocore as empty successes
INCOMPLETE_BACKOFF = 0.2
_STATE_HINTS = {
    "DisabledException": " (the key is disabled: enable it to read or write this data)",
    "KMSInvalidStateException": " (the key is pending deletion or import: cancel the deletion)",
    "NotFoundException": " (no such key in this account and region)",
}


def whole_answer(
    what: str, operation: str, call: Callable[[], Any], fields: tuple[str, ...]
) -> Any:
    """The answer with every field it must have. botocore parses an answer cut short (a
    connection closed mid-body) as an empty success, not an error: ask again, a few times, as
    for any transient fault, then stop naming the operation."""
    missing: list[str] = []
    for attempt in range(INCOMPLETE_ATTEMPTS):
        if attempt:
            time.sleep(INCOMPLETE_BACKOFF * 2 ** (attempt - 1))
        response = call()
        missing = [f for f in fields if not response.get(f)]
        if not missing:
            return response
    raise KeyProviderError(
        f"{what}: {operation} answered without {', '.join(missing)}"
        f" {INCOMPLETE_ATTEMPTS} times (answers cut short?); run the command again"
    )


def raise_kms_error(what: str, operation: str, exc: ClientError | BotoCoreError) -> NoReturn:
    # Only the error code and message: the full response can carry request details.
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", ""))
        reason = f"{code}: {message}" if message else code
        reason += _STATE_HINTS.get(code, "")
    else:
        reason = f"{type(exc).__name__}: {exc}"
    raise KeyProviderError(f"{what}: {operation} failed: {reason}") from exc


def error_code(exc: ClientError) -> str:
    """The error code KMS answered with."""
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))

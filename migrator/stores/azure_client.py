"""How the Azure Blob store and source reach the service: the SDK retry policy, sign-in at
Azure Government, account keys and SAS tokens, and SDK failures read as one StoreError line.

Kept apart from the store's operations so the source (sources/azure.py) builds its client the
same way without the store's upload logic.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ExponentialRetry
from requests import RequestException

from migrator.errors import StoreError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

MAX_BACKOFF_SECONDS = 30.0
# The SDK wraps most transport failures in AzureError, but a few paths let requests' own out.
TRANSPORT_ERRORS = (AzureError, RequestException)
_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s]+", re.IGNORECASE)


class BlobRetry(ExponentialRetry):
    """The SDK's storage retry rules (5xx but 501/505, 408, connection resets, an MD5 the
    service echoes differently) with `retry_total` for every kind and a doubling, capped,
    jittered backoff starting at `backoff` seconds (the SDK's own starts at 15 s)."""

    def __init__(self, retry_total: int = 10, backoff: float = 0.5) -> None:
        super().__init__(
            retry_total=retry_total,
            retry_connect=retry_total,
            retry_read=retry_total,
            retry_status=retry_total,
            random_jitter_range=0,
        )
        self.backoff = backoff

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        # The SDK counts a retry before it sleeps: the first sleep sees count 1.
        retry = max(settings["count"] - 1, 0)
        delay = min(self.backoff * 2**retry, MAX_BACKOFF_SECONDS)
        return float(delay * random.uniform(0.8, 1.2))


def government_credential(**options: Any) -> TokenCredential:
    """azure-identity's DefaultAzureCredential signing in at Azure Government's authority."""
    try:
        from azure.identity import AzureAuthorityHosts, DefaultAzureCredential
    except ImportError as exc:
        raise StoreError(
            "Azure Government sign-in needs the optional azure-identity package: "
            "pip install 'migrator[azure-identity]' (or pass an account key or connection string)"
        ) from exc
    credential = DefaultAzureCredential(authority=AzureAuthorityHosts.AZURE_GOVERNMENT, **options)
    return cast("TokenCredential", credential)


def key_credential(account_url: str, credential: Any | None) -> Any | None:
    """An account key or SAS token given as a string becomes the SDK's credential for it."""
    if not isinstance(credential, str):
        return credential
    if "sig=" in credential:
        return AzureSasCredential(credential)
    return AzureNamedKeyCredential(account_name(account_url), credential)


def account_name(account_url: str) -> str:
    """<account>.blob.core... names the account in the host; emulators in the first path part."""
    parts = urlsplit(account_url)
    host = parts.hostname or ""
    if host.replace(".", "").isdigit() or host in {"localhost", "::1"} or ":" in host:
        return parts.path.strip("/").split("/")[0]
    return host.split(".")[0]


def public_location(url: str) -> str:
    """A client URL's host and path only: a SAS in it, or user info, must never reach a message."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] + parts.path.rstrip("/")


def container_missing(exc: ResourceNotFoundError) -> bool:
    """Whether a not-found answer is about the container rather than the blob."""
    # Azure names the missing thing in x-ms-error-code, HEAD responses included.
    error_code = getattr(exc, "error_code", None)
    return str(getattr(error_code, "value", error_code)) == "ContainerNotFound"


def store_error(url: str, operation: str, exc: Exception) -> StoreError:
    """The failure as one line: the error code and the message's first line (the rest repeats
    request ids and XML), with any SAS signature masked."""
    if isinstance(exc, HttpResponseError):
        error_code = getattr(exc, "error_code", None)  # the SDK's enum, or the raw header
        code = f"{exc.status_code} {getattr(error_code, 'value', error_code) or exc.reason}"
        message = str(exc.message or "")
    else:
        code, message = type(exc).__name__, str(exc)
    lines = message.strip().splitlines()
    reason = f"{code}: {lines[0] if lines else ''}"
    # A SAS signature can appear in a URL inside a connection error: never repeat it.
    reason = _SAS_SIGNATURE.sub(r"\1***", reason)
    return StoreError(f"{url}: {operation} failed: {reason}")


def content_md5(data: bytes) -> str:
    """The Content-MD5 header value of a body: what the service checks a staged block against."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()

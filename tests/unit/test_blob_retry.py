"""The Azure stores' retry backoff: doubling from `backoff` seconds, capped, jittered."""

from __future__ import annotations

from typing import Any

from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest

from migrator.stores.azure_client import MAX_BACKOFF_SECONDS, BlobRetry


def backoffs(policy: BlobRetry, retries: int) -> list[float]:
    """The sleep before each retry, as the SDK's retry loop asks for it: it counts the retry
    (`increment`), then sleeps `get_backoff_time`."""
    request = PipelineRequest(
        HttpRequest("PUT", "http://127.0.0.1/account/c/b"), PipelineContext(None)
    )
    settings: dict[str, Any] = policy.configure_retries(request)
    slept = []
    for _ in range(retries):
        assert policy.increment(settings, request.http_request)
        slept.append(policy.get_backoff_time(settings))
    return slept


def test_the_first_retry_waits_backoff_seconds_then_doubling() -> None:
    slept = backoffs(BlobRetry(retry_total=10, backoff=0.5), 4)
    for seconds, nominal in zip(slept, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert nominal * 0.8 <= seconds <= nominal * 1.2


def test_the_backoff_is_capped() -> None:
    slept = backoffs(BlobRetry(retry_total=12, backoff=0.5), 12)
    assert max(slept) <= MAX_BACKOFF_SECONDS * 1.2
    assert slept[-1] >= MAX_BACKOFF_SECONDS * 0.8

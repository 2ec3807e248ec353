"""How an `S3Store` builds its boto3 client: FIPS endpoints in GovCloud, retries, timeouts, and
endpoints from the plan only (never botocore's endpoint variables or config file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from migrator.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

RETRY_MODES = frozenset({"standard", "adaptive"})
GOVCLOUD_REGION_PREFIX = "us-gov-"


@dataclass(frozen=True, slots=True)
class S3ClientSettings:
    """Everything the client depends on; validated on creation.

    Throttling (SlowDown, 503), other 5xx, connection errors, resets and read timeouts are
    all retried by botocore itself in `standard` and `adaptive` modes, with backoff;
    `adaptive` also slows the client's own request rate while S3 throttles it.
    """

    region: str | None = None
    endpoint_url: str | None = None
    profile_name: str | None = None
    use_fips: bool | None = None  # None: on in us-gov-* regions, off elsewhere
    retry_mode: str = "adaptive"
    max_attempts: int = 10  # attempts in all, the first included
    max_pool_connections: int = 32
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.retry_mode not in RETRY_MODES:
            raise ValueError(
                f"retry_mode {self.retry_mode!r} is not one of {', '.join(sorted(RETRY_MODES))}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.max_pool_connections < 1:
            raise ValueError(
                f"max_pool_connections must be at least 1, not {self.max_pool_connections}"
            )
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError(
                f"timeouts must be positive, not connect {self.connect_timeout}"
                f" / read {self.read_timeout}"
            )


def resolve_use_fips(use_fips: bool | None, region: str | None, endpoint_url: str | None) -> bool:
    """FIPS 140 endpoints by default in GovCloud; never with an explicit endpoint (moto, tests)."""
    if endpoint_url is not None:
        return False
    if use_fips is not None:
        return use_fips
    return region is not None and region.startswith(GOVCLOUD_REGION_PREFIX)


def build_s3_client(settings: S3ClientSettings) -> S3Client:
    """A client on the default credential chain (or `profile_name`), never sharing a session."""
    try:
        # A session per store: boto3's default session is not safe to share across threads.
        session = boto3.session.Session(profile_name=settings.profile_name)
    except BotoCoreError as exc:
        raise StoreError(f"S3 credentials: {type(exc).__name__}: {exc}") from exc
    # The profile may name the region, so decide on FIPS only once the session has resolved it.
    region = settings.region or session.region_name
    config = Config(  # type: ignore[call-arg]  # its stubs lack ignore_configured_endpoint_urls
        use_fips_endpoint=resolve_use_fips(settings.use_fips, region, settings.endpoint_url),
        retries={
            "mode": cast(Literal["standard", "adaptive"], settings.retry_mode),
            "total_max_attempts": settings.max_attempts,
        },
        max_pool_connections=settings.max_pool_connections,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # S3Store asks for its checksums itself, so that it can stop when a look-alike refuses
        # them (s3_compat.py): botocore adds none of its own.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Endpoints come from the plan alone: AWS_ENDPOINT_URL(_S3) and the config file's
        # endpoint_url would send requests past the residency check (migrator/residency).
        ignore_configured_endpoint_urls=True,
    )
    try:
        return session.client(
            "s3", region_name=region, endpoint_url=settings.endpoint_url, config=config
        )
    except BotoCoreError as exc:
        raise StoreError(f"S3 client for region {region!r}: {type(exc).__name__}: {exc}") from exc

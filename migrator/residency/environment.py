"""What the environment adds to a plan's endpoints: Azure connection strings, botocore's endpoint
variables, and the state store's host. Each is read at check time, the moment before it is used.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

# botocore reads these as endpoint URLs (all services, then one service); the destination and
# key clients ignore them (`ignore_configured_endpoint_urls`), but a foreign one is refused.
AWS_ENDPOINT_ENV = {
    "s3": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
    "kms": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS"),
}
# libpq takes these query parameters over the URL's host (and PGHOST where it names none,
# PGHOSTADDR always).
_PG_HOST_PARAMS = ("host", "hostaddr")
# azure-storage-blob's development storage account (parse_connection_str).
DEV_STORAGE_BLOB = "http://127.0.0.1:10000/devstoreaccount1"


class ConnectionStringError(ValueError):
    """A connection string the Azure SDK would refuse, or whose endpoint it cannot name."""


@dataclass(frozen=True, slots=True)
class BlobEndpoints:
    """The blob endpoints a connection string makes the SDK use (never its secret parts)."""

    primary: str  # a URL
    secondary: str | None  # a host name, as the SDK keeps it


def blob_endpoints(connection_string: str) -> BlobEndpoints:
    """The endpoints exactly as azure-storage-blob's `parse_connection_str` derives them for
    the blob service: BlobEndpoint if given, else protocol, account name and suffix."""
    settings: dict[str, str] = {}
    for part in connection_string.rstrip(";").split(";"):
        name, sep, value = part.partition("=")
        if not sep:
            raise ConnectionStringError("is blank or malformed (a part without '=')")
        settings[name.upper()] = value  # the SDK's dict(): a repeated name, the last wins
    if settings.get("USEDEVELOPMENTSTORAGE") == "true":
        return BlobEndpoints(DEV_STORAGE_BLOB, None)
    if "BLOBENDPOINT" in settings:
        return BlobEndpoints(settings["BLOBENDPOINT"], settings.get("BLOBSECONDARYENDPOINT"))
    if "BLOBSECONDARYENDPOINT" in settings:
        raise ConnectionStringError("names only a secondary blob endpoint")
    if "ACCOUNTNAME" not in settings:
        raise ConnectionStringError("names neither BlobEndpoint nor AccountName")
    account = settings["ACCOUNTNAME"]
    if "DEFAULTENDPOINTSPROTOCOL" in settings and "ENDPOINTSUFFIX" in settings:
        suffix = settings["ENDPOINTSUFFIX"]
        return BlobEndpoints(
            f"{settings['DEFAULTENDPOINTSPROTOCOL']}://{account}.blob.{suffix}",
            f"{account}-secondary.blob.{suffix}",
        )
    return BlobEndpoints(
        f"https://{account}.blob.{settings.get('ENDPOINTSUFFIX', 'core.windows.net')}", None
    )


def aws_endpoint_overrides(service: str) -> list[tuple[str, str]]:
    """(variable, value) of every botocore endpoint variable for `service` that is set."""
    return [(name, os.environ[name]) for name in AWS_ENDPOINT_ENV[service] if os.environ.get(name)]


@dataclass(frozen=True, slots=True)
class StateHost:
    """One host a PostgreSQL connection (the state store's, a landing table's) would reach,
    and where it was named."""

    source: str  # e.g. "state_url", "MIGRATOR_STATE_URL", "PGHOST"
    host: str  # "localhost" for a local socket


def state_hosts(plan_state_url: str | None) -> tuple[str | None, list[StateHost]]:
    """The effective state URL's source and every host libpq would take from it and from the
    environment; no hosts for SQLite (a local file). Raises ValueError for a URL that cannot
    be read, or that names a pg_service entry (whose host this cannot see)."""
    from migrator.state.urls import STATE_URL_ENV

    from_env = os.environ.get(STATE_URL_ENV)
    url = from_env or plan_state_url
    source = STATE_URL_ENV if from_env else "state_url"
    if url is None or url.startswith("sqlite"):
        return None, []
    return source, postgres_hosts(url, source)


def postgres_hosts(url: str, source: str) -> list[StateHost]:
    """Every host libpq would connect to for a PostgreSQL URL named by `source`: the URL's,
    its ?host= and ?hostaddr= parameters, PGHOST where it names none, PGHOSTADDR always.
    Raises ValueError as `state_hosts` does."""
    from sqlalchemy.engine import make_url  # the state store's imports: only for its checks
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # a bad port is a ValueError; neither shows the URL
        raise ValueError("cannot be read as a URL") from None
    query = {name.lower(): value for name, value in parsed.query.items()}
    if "service" in query or os.environ.get("PGSERVICE"):
        raise ValueError("names a pg_service entry: give the host in the URL")
    hosts: list[StateHost] = []
    for param in _PG_HOST_PARAMS:
        values = query.get(param, ())
        for value in (values,) if isinstance(values, str) else values:
            hosts += [StateHost(f"{source} ?{param}=", _no_port(h)) for h in value.split(",")]
    if parsed.host:
        hosts += [StateHost(source, _no_port(h)) for h in parsed.host.split(",")]
    elif not any(h.source.endswith("?host=") for h in hosts):
        pghost = os.environ.get("PGHOST")
        names = pghost.split(",") if pghost else ["localhost"]
        where = "PGHOST" if pghost else f"{source} (a local socket)"
        hosts += [StateHost(where, "localhost" if h.startswith("/") else h) for h in names]
    if os.environ.get("PGHOSTADDR"):
        hosts += [StateHost("PGHOSTADDR", h) for h in os.environ["PGHOSTADDR"].split(",")]
    return hosts


def landing_table_hosts(variable: str) -> list[StateHost] | None:
    """The hosts a landing table's connection would reach, from the URL in `variable`; None
    while it is unset. Raises ValueError (never showing the URL) as `postgres_hosts` does."""
    url = os.environ.get(variable)
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgresql+psycopg2://")):
        raise ValueError("is not a postgresql:// or postgresql+psycopg2:// URL")
    return postgres_hosts(url, variable)


def on_loopback(variable: str) -> bool:
    """Whether every host of the URL in `variable` is loopback; while it is unset nothing is
    known (the checks run again when `land` reads it)."""
    try:
        hosts = landing_table_hosts(variable)
    except ValueError:
        return False
    return hosts is None or all(is_loopback_host(found.host) for found in hosts)


def is_loopback_host(host: str) -> bool:
    """localhost (a local socket too), or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _no_port(host: str) -> str:
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host

"""Endpoint URLs read the way the SDKs will connect, and the hosts each cloud really serves.

boto3 and the Azure SDK both hand a URL to urllib3 (botocore's connection pool, requests under
azure-core), while plans and older checks read it with `urllib.parse`. The two disagree on
tricks such as `https://evil.example\\@s3-fips.us-gov-west-1.amazonaws.com`, so an endpoint is
accepted only in a form where no parser can differ: `https://HOST[:443]`, a host of DNS labels
and nothing else, and both parsers must still agree on it. A host is then placed by its exact
structure (`s3-fips.us-gov-west-1.amazonaws.com`, `ACCOUNT.blob.core.usgovcloudapi.net`), never
by a name it merely contains.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from migrator.keys.arn import partition_of_region

# DNS domain of each AWS partition (botocore's partitions data).
AWS_DOMAINS = {
    "aws": "amazonaws.com",
    "aws-us-gov": "amazonaws.com",
    "aws-cn": "amazonaws.com.cn",
    "aws-iso": "c2s.ic.gov",
    "aws-iso-b": "sc2s.sgov.gov",
    "aws-iso-e": "cloud.adc-e.uk",
    "aws-iso-f": "csp.hci.ic.gov",
}
# Azure Storage and Key Vault (or Managed HSM) host suffixes of each Azure cloud.
AZURE_BLOB_SUFFIXES = {
    "blob.core.windows.net": "AzureCloud",
    "blob.core.usgovcloudapi.net": "AzureUSGovernment",
    "blob.core.chinacloudapi.cn": "AzureChinaCloud",
}
AZURE_VAULT_SUFFIXES = {
    "vault.azure.net": "AzureCloud",
    "managedhsm.azure.net": "AzureCloud",
    "vault.usgovcloudapi.net": "AzureUSGovernment",
    "managedhsm.usgovcloudapi.net": "AzureUSGovernment",
    "vault.azure.cn": "AzureChinaCloud",
    "managedhsm.azure.cn": "AzureChinaCloud",
}
_STORAGE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_VAULT_NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?!-)){1,22}[a-z0-9]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOOPBACK_PATH = re.compile(r"(/[A-Za-z0-9._~-]*)*")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


class EndpointRefused(ValueError):
    """An endpoint URL that is not plainly `https://HOST[:443]`; the message says why."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as both urllib.parse and urllib3 read it (they agree, or it is refused)."""

    url: str
    scheme: str
    host: str  # lower case; IPv6 without brackets
    port: int | None
    loopback: bool


def parse_endpoint(url: str) -> Endpoint:
    """The endpoint `url` names, or EndpointRefused.

    Refused: anything but ASCII letters, digits and URL punctuation; userinfo (`@`), `\\`,
    percent-escapes, a query or fragment; IP literals in any form (the canonical loopback
    127.0.0.1, ::1 and localhost aside: the caller decides on those); empty labels and a
    trailing dot; a scheme other than https, a port other than 443, a path other than `/`.
    """
    from urllib3.exceptions import LocationParseError  # ~15 ms: only for a plan with endpoints
    from urllib3.util import parse_url

    bad = next((c for c in url if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise EndpointRefused(f"holds {bad!r}: only printable ASCII, no spaces or controls")
    for char, what in (("@", "userinfo ('@')"), ("\\", "a backslash"), ("%", "a percent-escape")):
        if char in url:
            raise EndpointRefused(f"holds {what}: parsers disagree on such URLs")
    if "?" in url or "#" in url:
        raise EndpointRefused("holds a query or fragment: give the endpoint alone")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise EndpointRefused("is not a URL of the form https://HOST")
    authority, slash, path = rest.partition("/")
    try:
        split = urlsplit(url)
        split_port = split.port
        u3 = parse_url(url)
    except (ValueError, LocationParseError) as exc:
        raise EndpointRefused(f"cannot be parsed ({exc})") from None
    host = (split.hostname or "").lower()
    if (split.scheme, host, split_port) != (
        (u3.scheme or "").lower(),
        (u3.host or "").lower().strip("[]"),
        u3.port,
    ):
        raise EndpointRefused("urllib.parse and urllib3 read different hosts from it")
    if _is_loopback_host(host, authority):
        if split.scheme not in ("http", "https") or not _LOOPBACK_PATH.fullmatch(slash + path):
            raise EndpointRefused("a loopback endpoint is http(s)://HOST:PORT[/PATH] only")
        return Endpoint(url, split.scheme, host, split_port, loopback=True)
    if split.scheme != "https":
        raise EndpointRefused(f"scheme {split.scheme or scheme!r}: only https leaves this machine")
    _check_host(host)
    if authority.lower() not in (host, f"{host}:443"):
        raise EndpointRefused("names a port other than 443")
    if path:
        raise EndpointRefused("has a path: give the endpoint alone")
    return Endpoint(url, "https", host, split_port, loopback=False)


def is_loopback(url: str) -> bool:
    """True for a plain loopback endpoint (127.0.0.1, ::1 or localhost, any port)."""
    try:
        return parse_endpoint(url).loopback
    except EndpointRefused:
        return False


def _is_loopback_host(host: str, authority: str) -> bool:
    if host == "localhost":
        return True
    if authority.startswith("["):
        return host == "::1"
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return address.is_loopback and str(address) == host  # the canonical dotted form only


def _check_host(host: str) -> None:
    """A DNS name of non-empty labels; IP literals in every spelling are refused."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise EndpointRefused(f"names the IP address {host}: give the service's DNS name")
    labels = host.split(".")
    if not host or "" in labels:
        raise EndpointRefused("has an empty label or a trailing dot")
    if _NUMERIC_LABEL.fullmatch(labels[-1]) or _inet_aton_accepts(host):
        raise EndpointRefused("names an IP address in numeric form: give a DNS name")
    bad = next((label for label in labels if not _LABEL.fullmatch(label)), None)
    if bad is not None or len(host) > 253:
        raise EndpointRefused(f"label {bad!r} is not a DNS label")


def _inet_aton_accepts(host: str) -> bool:
    """C resolvers read `2130706433`, `0x7f.1` or `0177.0.0.1` as IPv4 addresses."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


# --- where a host lies ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPlace:
    """A host's cloud: an AWS partition or an Azure cloud, and whether it is a FIPS endpoint."""

    place: str
    fips: bool


def aws_service_host(host: str, service: str, region: str) -> HostPlace | None:
    """The place of `host` if it is exactly an endpoint of `service` (s3, kms) in `region`."""
    try:
        partition = partition_of_region(region)
    except ValueError:
        return None
    domain = AWS_DOMAINS.get(partition)
    if domain is None:
        return None
    hosts = {f"{service}.{region}.{domain}": False, f"{service}-fips.{region}.{domain}": True}
    if service == "s3":
        hosts[f"s3.dualstack.{region}.{domain}"] = False
        hosts[f"s3-fips.dualstack.{region}.{domain}"] = True
        if region == "us-east-1":
            hosts["s3.amazonaws.com"] = False
    fips = hosts.get(host)
    return None if fips is None else HostPlace(partition, fips)


def azure_blob_host(host: str, *, secondary: bool = False) -> HostPlace | None:
    """The cloud of `ACCOUNT.blob.SUFFIX` (`ACCOUNT-secondary` when `secondary`)."""
    account, _, suffix = host.partition(".")
    if secondary:
        account = account.removesuffix("-secondary")
    cloud = AZURE_BLOB_SUFFIXES.get(suffix)
    if cloud is None or not _STORAGE_ACCOUNT.fullmatch(account):
        return None
    return HostPlace(cloud, fips=True)  # Azure names no separate FIPS hosts


def azure_vault_host(host: str) -> HostPlace | None:
    """The cloud of `VAULT.vault.SUFFIX` or `HSM.managedhsm.SUFFIX`."""
    name, _, suffix = host.partition(".")
    cloud = AZURE_VAULT_SUFFIXES.get(suffix)
    if cloud is None or not _VAULT_NAME.fullmatch(name):
        return None
    return HostPlace(cloud, fips=True)


def shown_url(url: str, limit: int = 160) -> str:
    """A URL as messages may show it: no userinfo, query or fragment (they can hold secrets)."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    text = url[:cut]
    scheme, sep, rest = text.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    shown = f"{scheme}{sep}{authority}{slash}{path}" if sep else text
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."

"""Residency policy: every destination endpoint, region and key is checked before a byte moves.

A plan's `residency` names the AWS partitions and Azure clouds data and keys may live in. The
checks look only at the plan (no request is sent), so `plan` and `run` refuse at once, and the
dry run reports them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from migrator.errors import PlanError
from migrator.keys.arn import parse_kms_arn, partition_of_region
from migrator.plan.model import Plan

# Host suffixes of each Azure cloud's services.
_AZURE_BLOB = {
    ".blob.core.windows.net": "AzureCloud",
    ".blob.core.usgovcloudapi.net": "AzureUSGovernment",
    ".blob.core.chinacloudapi.cn": "AzureChinaCloud",
}
_AZURE_VAULT = {
    ".vault.azure.net": "AzureCloud",
    ".vault.usgovcloudapi.net": "AzureUSGovernment",
    ".vault.azure.cn": "AzureChinaCloud",
}
_AWS_DOMAINS = {
    "aws": ".amazonaws.com",
    "aws-us-gov": ".amazonaws.com",
    "aws-cn": ".amazonaws.com.cn",
}


@dataclass(frozen=True, slots=True)
class ResidencyCheck:
    field: str  # the plan field checked, e.g. "destination.region"
    value: str
    place: str  # the partition or cloud it lies in, or "loopback", "local", "unknown"
    allowed: bool
    reason: str


class ResidencyError(PlanError):
    """The plan would put data or keys outside the allowed clouds."""


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Checker:
    def __init__(self, plan: Plan, allow_loopback: bool) -> None:
        policy = plan.residency
        assert policy is not None
        self.partitions = set(policy.aws_partitions)
        self.clouds = set(policy.azure_clouds)
        self.allow_loopback = allow_loopback
        self.checks: list[ResidencyCheck] = []

    def add(self, field: str, value: str, place: str, allowed: bool, reason: str) -> None:
        self.checks.append(ResidencyCheck(field, value, place, allowed, reason))

    def partition(self, field: str, value: str, partition: str) -> None:
        ok = partition in self.partitions
        why = (
            "allowed partition"
            if ok
            else f"partition {partition} is not in {sorted(self.partitions)}"
        )
        self.add(field, value, partition, ok, why)

    def loopback(self, field: str, url: str) -> bool:
        """True if url is a loopback endpoint (then recorded); refused without the test flag."""
        if not is_loopback(url):
            return False
        why = (
            "loopback endpoint, allowed by the test flag"
            if self.allow_loopback
            else ("loopback endpoint: allowed only with --allow-loopback (tests and rehearsals)")
        )
        self.add(field, url, "loopback", self.allow_loopback, why)
        return True

    def aws_endpoint(self, field: str, url: str, region: str | None) -> None:
        if self.loopback(field, url):
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        partition = partition_of_region(region) if region else None
        domain = _AWS_DOMAINS.get(partition or "", ".amazonaws.com")
        if parts.scheme != "https":
            self.add(field, url, "unknown", False, "not https")
        elif not host.endswith(domain) or (region is not None and region not in host.split(".")):
            self.add(field, url, "unknown", False, f"not an AWS endpoint of region {region}")
        else:
            self.partition(field, url, partition or "aws")

    def azure_url(self, field: str, url: str, suffixes: dict[str, str]) -> None:
        if self.loopback(field, url):
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        cloud = next((c for suffix, c in suffixes.items() if host.endswith(suffix)), None)
        if parts.scheme != "https" or cloud is None:
            self.add(field, url, "unknown", False, "not an https endpoint of a known Azure cloud")
            return
        ok = cloud in self.clouds
        why = "allowed cloud" if ok else f"cloud {cloud} is not in {sorted(self.clouds)}"
        self.add(field, url, cloud, ok, why)

    def kms_key(self, field: str, key_id: str, region: str | None) -> None:
        arn = parse_kms_arn(key_id)
        if arn is not None:
            self.partition(field, key_id, arn.partition)
            if region is not None and region != arn.region:
                self.add(
                    field, key_id, arn.partition, False, f"key is in {arn.region}, not {region}"
                )
        elif region is not None:
            self.partition(field, key_id, partition_of_region(region))
        else:
            self.add(
                field,
                key_id,
                "unknown",
                False,
                "give a key ARN or keys.region: the key's partition is unknown",
            )


def check_residency(plan: Plan, *, allow_loopback: bool = False) -> list[ResidencyCheck]:
    """Every check made, allowed or not; an empty list when the plan has no policy."""
    if plan.residency is None:
        return []
    c = _Checker(plan, allow_loopback)
    dest = plan.destination
    if dest.kind == "local":
        c.add(
            "destination.path",
            str(dest.path),
            "local",
            allow_loopback,
            "a local folder is outside any cloud: allowed only with --allow-loopback",
        )
    elif dest.kind == "s3":
        assert dest.region is not None
        c.partition("destination.region", dest.region, partition_of_region(dest.region))
        if dest.endpoint_url:
            c.aws_endpoint("destination.endpoint_url", dest.endpoint_url, dest.region)
        if dest.sse_kms_key_id:
            c.kms_key("destination.sse_kms_key_id", dest.sse_kms_key_id, dest.region)
    else:
        assert dest.account_url is not None
        c.azure_url("destination.account_url", dest.account_url, _AZURE_BLOB)
    keys = plan.keys
    if keys.provider == "aws-kms":
        assert keys.key_id is not None
        c.kms_key("keys.key_id", keys.key_id, keys.region)
        if keys.endpoint_url:
            c.aws_endpoint("keys.endpoint_url", keys.endpoint_url, keys.region)
    elif keys.provider == "azure-keyvault":
        assert keys.vault_url is not None
        c.azure_url("keys.vault_url", keys.vault_url, _AZURE_VAULT)
    else:
        c.add(
            "keys.kek_file",
            str(keys.kek_file),
            "local",
            True,
            "a local KEK file held by the operator, in no cloud",
        )
    return c.checks


def enforce_residency(plan: Plan, *, allow_loopback: bool = False) -> list[ResidencyCheck]:
    """The checks, or ResidencyError naming the plan file and every refused field."""
    checks = check_residency(plan, allow_loopback=allow_loopback)
    refused = [chk for chk in checks if not chk.allowed]
    if refused:
        first, *rest = refused
        lines = [f"{first.field}: residency refused {first.value!r}: {first.reason}"]
        lines += [
            f"{plan.plan_path}: {r.field}: residency refused {r.value!r}: {r.reason}" for r in rest
        ]
        raise ResidencyError(str(plan.plan_path), None, "\n".join(lines))
    return checks

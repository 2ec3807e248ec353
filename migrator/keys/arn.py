"""KMS key references: ARNs, bare key ids and aliases, and the AWS partition a region lies in.

Residency checks use this too: a GovCloud plan must name a key in the `aws-us-gov` partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

KmsResourceType = Literal["key", "alias"]

# Longest prefix first: "us-isob-" must not be read as "us-iso".
_PARTITION_PREFIXES: tuple[tuple[str, str], ...] = (
    ("us-gov-", "aws-us-gov"),
    ("cn-", "aws-cn"),
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-iso-", "aws-iso"),
)
KNOWN_PARTITIONS = frozenset({"aws", *(partition for _, partition in _PARTITION_PREFIXES)})

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_ACCOUNT = re.compile(r"\d{12}")
# Single-region keys are UUIDs; multi-Region keys are "mrk-" and 32 hex digits.
_KEY_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}", re.IGNORECASE
)
_ALIAS_NAME = re.compile(r"alias/[A-Za-z0-9/_-]{1,250}")


@dataclass(frozen=True, slots=True)
class KmsArn:
    """`arn:<partition>:kms:<region>:<account>:key/<id>` or `...:alias/<name>`, split up.

    For an alias, `resource_id` is the alias name without the `alias/` prefix.
    """

    partition: str
    region: str
    account: str
    resource_type: KmsResourceType
    resource_id: str

    def __str__(self) -> str:
        return (
            f"arn:{self.partition}:kms:{self.region}:{self.account}:"
            f"{self.resource_type}/{self.resource_id}"
        )


def partition_of_region(region: str) -> str:
    """The AWS partition of `region`: us-gov-* → aws-us-gov, cn-* → aws-cn, us-iso* → aws-iso…"""
    if not _REGION.fullmatch(region):
        raise ValueError(f"{region!r} is not an AWS region name such as 'us-gov-west-1'")
    for prefix, partition in _PARTITION_PREFIXES:
        if region.startswith(prefix):
            return partition
    return "aws"


def parse_kms_arn(value: str) -> KmsArn | None:
    """Split a KMS key or alias ARN; None for a bare key id or `alias/NAME`, which name no
    partition or region (the caller decides whether that is acceptable).

    Raises ValueError, saying which part is wrong, for anything else.
    """
    if not value.startswith("arn:"):
        if _KEY_ID.fullmatch(value) or _ALIAS_NAME.fullmatch(value):
            return None
        raise ValueError(
            f"{value!r} is not a KMS key reference: expected a key ARN, an alias ARN, a key id"
            " or 'alias/NAME'"
        )
    parts = value.split(":", 5)
    if len(parts) != 6:
        raise ValueError(
            f"{value!r} is not a KMS ARN: expected arn:PARTITION:kms:REGION:ACCOUNT:key/ID"
        )
    _, partition, service, region, account, resource = parts
    if service != "kms":
        raise ValueError(f"{value!r} is not a KMS ARN: service is {service!r}, not 'kms'")
    if partition not in KNOWN_PARTITIONS:
        known = ", ".join(sorted(KNOWN_PARTITIONS))
        raise ValueError(f"{value!r}: unknown partition {partition!r} (one of {known})")
    if not _REGION.fullmatch(region):
        raise ValueError(f"{value!r}: {region!r} is not an AWS region name")
    if partition_of_region(region) != partition:
        raise ValueError(
            f"{value!r}: region {region} lies in partition {partition_of_region(region)!r},"
            f" not {partition!r}"
        )
    if not _ACCOUNT.fullmatch(account):
        raise ValueError(f"{value!r}: account {account!r} is not 12 digits")
    if resource.startswith("key/") and _KEY_ID.fullmatch(resource[4:]):
        return KmsArn(partition, region, account, "key", resource[4:])
    if _ALIAS_NAME.fullmatch(resource):
        return KmsArn(partition, region, account, "alias", resource[6:])
    raise ValueError(
        f"{value!r}: resource {resource!r} is neither 'key/<key id>' nor 'alias/<name>'"
    )

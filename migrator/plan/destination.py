"""Where chunks go: a folder (demos, tests), an S3 bucket or an Azure Blob container, one model
per kind; and the Object Lock retention an S3 destination may put on its commit points."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field

from migrator.plan.kinds import (
    AZURE_SECRET_FIELDS,
    STORE_ADDRESS_FIELDS,
    STORE_KIND_HELP,
    StoreKind,
)
from migrator.plan.section import KindVariant, PlanModel, Problem
from migrator.plan.types import (
    AZURE_CONTAINER_PATTERN,
    PATTERN_HINTS,
    S3_BUCKET_PATTERN,
    AnyStr,
    EnvVarName,
    KeyPrefix,
    KmsKeyId,
    PlanPath,
    Region,
    SizeBytes,
    Url,
)

__all__ = [
    "AzureDestinationPlan",
    "DestinationPlan",
    "LocalDestinationPlan",
    "RetentionPlan",
    "S3DestinationPlan",
]

_PREFIX = "Key prefix; stored with a trailing '/'."
# Azure's rule for encryption scope names: 3-63 characters, each '-' between letters or digits.
_SCOPE_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_SCOPE_HINT = (
    "must be an encryption scope name (3-63 of a-z, 0-9 and '-', each '-' between a letter"
    " or digit)"
)


class RetentionPlan(PlanModel):
    """S3 Object Lock on the commit points: generation records and ledger segments."""

    mode: Literal["governance", "compliance"] = Field(
        description="governance: a principal with s3:BypassGovernanceRetention may still delete"
        " a locked version; compliance: no one can until the retention lapses."
    )
    days: Annotated[int, Field(strict=True, ge=1, le=36_500)] = Field(
        description="Each generation record and ledger segment is locked this many days from"
        " when it is stored."
    )


def _bucket_problems(pattern: str, data: dict[str, Any]) -> list[Problem]:
    """A bucket or container name as its service allows it."""
    bucket = data.get("bucket")
    if isinstance(bucket, str) and not re.fullmatch(pattern, bucket):
        return [(("bucket",), f"{PATTERN_HINTS[pattern]} (got {bucket!r})")]
    return []


class _Destination(KindVariant):
    kind_field = "kind"
    section_layout = (
        *STORE_ADDRESS_FIELDS,
        "use_fips",
        "sse_kms_key_id",
        "multipart_threshold",
        "upload_part_size",
        *AZURE_SECRET_FIELDS,
        "encryption_scope",
        "retention",
    )

    @classmethod
    def section_kinds(cls) -> tuple[type[KindVariant], ...]:
        return (LocalDestinationPlan, S3DestinationPlan, AzureDestinationPlan)


class LocalDestinationPlan(_Destination):
    """A folder: for demos, tests and rehearsals."""

    kind: Literal[StoreKind.LOCAL] = Field(description=STORE_KIND_HELP)
    path: PlanPath = Field(description="The folder.")
    prefix: KeyPrefix = Field(default="", description=_PREFIX)


class S3DestinationPlan(_Destination):
    """An S3 bucket."""

    kind: Literal[StoreKind.S3] = Field(description=STORE_KIND_HELP)
    bucket: AnyStr = Field(
        description="The bucket.", json_schema_extra={"pattern": S3_BUCKET_PATTERN}
    )
    prefix: KeyPrefix = Field(default="", description=_PREFIX)
    region: Region = Field(description="E.g. us-gov-west-1.")
    endpoint_url: Url | None = Field(default=None, description="E.g. a FIPS endpoint, or moto.")
    use_fips: bool | None = Field(
        default=None, description="FIPS endpoints; null: on in us-gov-* regions."
    )
    sse_kms_key_id: KmsKeyId | None = Field(
        default=None, description="Also ask S3 for SSE-KMS with this key (optional)."
    )
    multipart_threshold: SizeBytes | None = Field(
        default=None, description="Stored objects above this go up in parts."
    )
    upload_part_size: SizeBytes | None = Field(
        default=None, description="Bytes a part (at least 5MiB)."
    )
    retention: RetentionPlan | None = Field(
        default=None,
        description="Store generation records and ledger segments under Object Lock retention,"
        " so that no one can delete a committed generation's record; the bucket must have"
        " Object Lock enabled (checked before any byte moves).",
    )

    @classmethod
    def kind_value_problems(cls, data: dict[str, Any]) -> list[Problem]:
        return _bucket_problems(S3_BUCKET_PATTERN, data)


class AzureDestinationPlan(_Destination):
    """An Azure Blob Storage container."""

    kind: Literal[StoreKind.AZURE] = Field(description=STORE_KIND_HELP)
    bucket: AnyStr = Field(
        description="The container.", json_schema_extra={"pattern": AZURE_CONTAINER_PATTERN}
    )
    prefix: KeyPrefix = Field(default="", description=_PREFIX)
    account_url: Url = Field(description="E.g. https://ACCOUNT.blob.core.usgovcloudapi.net")
    multipart_threshold: SizeBytes | None = Field(
        default=None, description="Stored objects above this go up in parts."
    )
    upload_part_size: SizeBytes | None = Field(default=None, description="Bytes a part.")
    connection_string_env: EnvVarName | None = Field(
        default=None, description="Environment variable holding a connection string."
    )
    account_key_env: EnvVarName | None = Field(
        default=None,
        description="Environment variable holding the account key; with neither,"
        " azure-identity's default credential for the account's cloud is used.",
    )
    encryption_scope: AnyStr | None = Field(
        default=None,
        description="Encryption scope every blob is written under (the owner's key).",
        json_schema_extra={"pattern": _SCOPE_PATTERN, "minLength": 3, "maxLength": 63},
    )

    @classmethod
    def kind_value_problems(cls, data: dict[str, Any]) -> list[Problem]:
        problems = _bucket_problems(AZURE_CONTAINER_PATTERN, data)
        scope = data.get("encryption_scope")
        if isinstance(scope, str) and not (
            3 <= len(scope) <= 63 and re.fullmatch(_SCOPE_PATTERN, scope)
        ):
            problems.append((("encryption_scope",), f"{_SCOPE_HINT} (got {scope!r})"))
        return problems


DestinationPlan = Annotated[
    LocalDestinationPlan | S3DestinationPlan | AzureDestinationPlan,
    Field(discriminator="kind"),
]

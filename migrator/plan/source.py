"""Where a dataset is read from: exported files in a folder, or the old platform's S3 bucket or
Azure Blob container, one model per kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from migrator.plan.kinds import (
    AZURE_SECRET_FIELDS,
    STORE_ADDRESS_FIELDS,
    STORE_KIND_HELP,
    StoreKind,
)
from migrator.plan.section import KindVariant
from migrator.plan.types import AnyStr, EnvVarName, KeyPrefix, PlanPath, Region, Url

__all__ = ["AzureSourcePlan", "LocalSourcePlan", "S3SourcePlan", "SourcePlan"]

_PREFIX = "s3, azure: only keys under this prefix."


class _Source(KindVariant):
    kind_field = "kind"
    section_layout = (*STORE_ADDRESS_FIELDS, *AZURE_SECRET_FIELDS)

    @classmethod
    def section_kinds(cls) -> tuple[type[KindVariant], ...]:
        return (LocalSourcePlan, S3SourcePlan, AzureSourcePlan)


class LocalSourcePlan(_Source):
    """Exported files in a folder."""

    kind: Literal[StoreKind.LOCAL] = Field(description=STORE_KIND_HELP)
    path: PlanPath = Field(description="The folder.")
    prefix: KeyPrefix = Field(default="", description=_PREFIX)


class S3SourcePlan(_Source):
    """The old platform's S3 bucket."""

    kind: Literal[StoreKind.S3] = Field(description=STORE_KIND_HELP)
    bucket: AnyStr = Field(description="The bucket.")
    prefix: KeyPrefix = Field(default="", description=_PREFIX)
    region: Region | None = Field(default=None, description="The bucket's region.")
    endpoint_url: Url | None = Field(default=None, description="A custom endpoint.")


class AzureSourcePlan(_Source):
    """The old platform's Azure Blob container."""

    kind: Literal[StoreKind.AZURE] = Field(description=STORE_KIND_HELP)
    bucket: AnyStr = Field(description="The container.")
    prefix: KeyPrefix = Field(default="", description=_PREFIX)
    account_url: Url = Field(description="The account's blob URL.")
    connection_string_env: EnvVarName | None = Field(
        default=None, description="Environment variable holding a connection string."
    )
    account_key_env: EnvVarName | None = Field(
        default=None, description="Environment variable holding the account key."
    )


SourcePlan = Annotated[
    LocalSourcePlan | S3SourcePlan | AzureSourcePlan, Field(discriminator="kind")
]

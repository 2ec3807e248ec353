"""The kinds a plan names, as enums whose values are the words a plan file uses.

They are StrEnums so that a kind still equals its word (`dataset.kind == "records"`) and is
stored as that word; comparing with a member (`dest.kind is StoreKind.S3`) also narrows a
section's union to that kind's model.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AZURE_SECRET_FIELDS",
    "STORE_ADDRESS_FIELDS",
    "STORE_KIND_HELP",
    "DatasetKind",
    "KeyProviderKind",
    "StoreKind",
]


class DatasetKind(StrEnum):
    """Records are routed into shards by a key; objects are files stored in parts by name."""

    RECORDS = "records"
    OBJECTS = "objects"


class StoreKind(StrEnum):
    """Where a destination writes, or a source reads."""

    LOCAL = "local"
    S3 = "s3"
    AZURE = "azure"


STORE_KIND_HELP = "local | s3 | azure."
# Where a source or destination is, in the order a section lists its fields' problems; then
# each section's own fields, then the Azure secrets both read from the environment.
STORE_ADDRESS_FIELDS = (
    "kind",
    "path",
    "bucket",
    "prefix",
    "region",
    "endpoint_url",
    "account_url",
)
AZURE_SECRET_FIELDS = ("connection_string_env", "account_key_env")


class KeyProviderKind(StrEnum):
    """Where a key-encryption key lives."""

    LOCAL = "local"
    AWS_KMS = "aws-kms"
    AZURE_KEYVAULT = "azure-keyvault"

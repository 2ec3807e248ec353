"""The kinds a plan names, as enums whose values are the words a plan file uses.

They are StrEnums so that a kind still equals its word (`dataset.kind == "records"`) and is
stored as that word; comparing with a member (`dest.kind is StoreKind.S3`) also narrows a
section's union to that kind's model.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DatasetKind", "KeyProviderKind", "StoreKind"]


class DatasetKind(StrEnum):
    """Records are routed into shards by a key; objects are files stored in parts by name."""

    RECORDS = "records"
    OBJECTS = "objects"


class StoreKind(StrEnum):
    """Where a destination writes, or a source reads."""

    LOCAL = "local"
    S3 = "s3"
    AZURE = "azure"


class KeyProviderKind(StrEnum):
    """Where a key-encryption key lives."""

    LOCAL = "local"
    AWS_KMS = "aws-kms"
    AZURE_KEYVAULT = "azure-keyvault"

"""S3 Object Lock on the commit points (plan: `destination.retention`).

A generation record is what makes a generation visible, and the ledger segments are what an
auditor holds the destination to; deleting the newest of them rolls a dataset back. Stored
under Object Lock retention, no version of them can be deleted until the retention lapses
(governance: except by a principal allowed to bypass it; compliance: by no one). A plain
DELETE still succeeds on a versioned bucket, but it only adds a delete marker: the locked
version stays and can be made current again by deleting the marker, and verify, audit and
restore name the rollback meanwhile (read/freshness.py). Chunks and manifests are not locked,
so compaction deletes what it folds as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from migrator.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# The `migrator-kind` metadata of generation records (repository/generations.py) and of audit
# ledger segments (repository/segments.py): the objects put under retention.
RETAINED_KINDS = frozenset({"generation", "audit-ledger"})
_NO_CONFIGURATION = "ObjectLockConfigurationNotFoundError"


@dataclass(frozen=True, slots=True)
class ObjectRetention:
    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    days: int
    kinds: frozenset[str] = RETAINED_KINDS

    @classmethod
    def of(cls, mode: str, days: int) -> ObjectRetention:
        """From the plan's `retention` (mode in lower case, as the plan writes it)."""
        if mode not in ("governance", "compliance"):
            raise ValueError(f"retention mode {mode!r} is not governance or compliance")
        if days < 1:
            raise ValueError(f"retention days must be at least 1, not {days}")
        return cls("GOVERNANCE" if mode == "governance" else "COMPLIANCE", days)

    def put_args(self, metadata: Mapping[str, str], now: datetime | None = None) -> dict[str, Any]:
        """PutObject's lock arguments for an object of this kind; none for the others."""
        if metadata.get("migrator-kind") not in self.kinds:
            return {}
        until = (now or datetime.now(UTC)) + timedelta(days=self.days)
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": until}


def object_lock_enabled(client: S3Client, bucket: str) -> bool:
    """Whether the bucket has Object Lock enabled (so versioning too). Any other failure than
    a missing configuration is a StoreError naming the bucket and the permission needed."""
    try:
        response = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        if code == _NO_CONFIGURATION:
            return False
        message = exc.response.get("Error", {}).get("Message", "")
        raise StoreError(
            f"s3://{bucket}: cannot read the bucket's Object Lock configuration ({code}:"
            f" {message}); the plan's destination.retention needs"
            " s3:GetBucketObjectLockConfiguration"
        ) from exc
    except BotoCoreError as exc:
        raise StoreError(
            f"s3://{bucket}: cannot read the bucket's Object Lock configuration"
            f" ({type(exc).__name__}: {exc})"
        ) from exc
    return response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

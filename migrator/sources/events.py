"""An S3 source's changes as the bucket tells them: its event notifications, read from an SQS
queue (directly, or through an SNS topic).

Why events: a sensor that lists the source to learn whether it changed pays a whole listing a
tick, which at tens of millions of objects takes hours. A bucket that sends its
s3:ObjectCreated:* and s3:ObjectRemoved:* notifications to a queue says what changed itself, and
a tick costs a few ReceiveMessage requests, however big the bucket. A change is only a reason to
sync: the sync lists the source once and finds what changed by itself, so a lost or repeated
event costs at most a late or an empty sync, never a wrong one.

The queue must be the migration's own: messages about this source (its bucket, below its
prefix) are deleted once a sync has been asked for; others are left for whoever reads them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from migrator.errors import SourceError, UsageError
from migrator.plan.model import DatasetPlan, S3SourcePlan
from migrator.sources.base import included
from migrator.stores.base import key_prefix

# boto3 is imported where a queue is read, not here: every Dagster run process loads the
# sensors' module, and boto3 costs it ~60 ms of CPU (docs/PERFORMANCE.md).

RECEIVE_BATCH = 10  # ReceiveMessage's maximum
MAX_MESSAGES = 1000  # read at most this many a tick; the rest waits for the next
VISIBILITY_SECONDS = 60  # a message read but not deleted comes back after this
CHANGES = ("ObjectCreated:", "ObjectRemoved:", "LifecycleExpiration:")  # tags, ACLs: no change


@dataclass(frozen=True, slots=True)
class SourceEvent:
    name: str  # relative to the source's prefix, as the source lists it
    event: str  # e.g. "ObjectCreated:Put"
    sequencer: str  # S3's order of the events of one key


@dataclass
class EventBatch:
    """What one read of the queue found: this source's changes, and which messages to delete
    once they are acted on."""

    changes: list[SourceEvent] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)  # this source's messages (and S3's tests)
    others: int = 0  # messages about another bucket or prefix, or not S3 events: left queued

    def key(self) -> str:
        """sha256 of the changes, whatever order they came in: the same events, the same key."""
        lines = sorted(f"{e.event}\0{e.name}\0{e.sequencer}\n" for e in self.changes)
        return hashlib.sha256("".join(lines).encode()).hexdigest()


class EventQueue:
    """The SQS queue an S3 source's bucket sends its event notifications to."""

    def __init__(self, ds: DatasetPlan, queue_url: str, *, client: Any = None) -> None:
        source = ds.source
        if not isinstance(source, S3SourcePlan):
            raise UsageError(
                f"dataset {ds.name}: change events are read for S3 sources only,"
                f" not a {source.kind} source"
            )
        self.ds, self.url = ds, queue_url
        self.bucket, self.prefix = source.bucket, key_prefix(source.prefix)
        self._client = client if client is not None else _sqs_client(source)

    def receive(self, most: int = MAX_MESSAGES) -> EventBatch:
        """Up to `most` messages, hidden from other readers for VISIBILITY_SECONDS."""
        batch = EventBatch()
        while len(batch.receipts) + batch.others < most:
            want = min(RECEIVE_BATCH, most - len(batch.receipts) - batch.others)
            messages = self._call(
                "receive_message",
                QueueUrl=self.url,
                MaxNumberOfMessages=want,
                VisibilityTimeout=VISIBILITY_SECONDS,
                WaitTimeSeconds=1,  # long polling asks every server: an empty answer is true
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                self._sort(message, batch)
        return batch

    def acknowledge(self, batch: EventBatch) -> None:
        """Delete the batch's messages: a sync has been asked for."""
        for start in range(0, len(batch.receipts), RECEIVE_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle}
                for i, handle in enumerate(batch.receipts[start : start + RECEIVE_BATCH])
            ]
            self._call("delete_message_batch", QueueUrl=self.url, Entries=entries)

    def _sort(self, message: dict[str, Any], batch: EventBatch) -> None:
        records = _records(message.get("Body", ""))
        if records is None:
            batch.others += 1
            return
        mine = [self._name(r) for r in records]
        if any(name is None for name in mine):
            batch.others += 1
            return
        batch.receipts.append(message["ReceiptHandle"])
        for record, name in zip(records, mine, strict=True):
            event = str(record.get("eventName", ""))
            if name is None or not event.startswith(CHANGES) or name.endswith("/"):
                continue  # a folder marker, or tags and ACLs: the listing is the same
            if included(name, self.ds.include):
                sequencer = str(record["s3"]["object"].get("sequencer", ""))
                batch.changes.append(SourceEvent(name, event, sequencer))

    def _name(self, record: dict[str, Any]) -> str | None:
        """The record's object name below the source's prefix; None if not this source's."""
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            return None
        if bucket != self.bucket or not key.startswith(self.prefix):
            return None
        return key[len(self.prefix) :]

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer: dict[str, Any] = getattr(self._client, operation)(**request)
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(
                f"dataset {self.ds.name}: event queue {self.url}: {operation} failed"
                f" ({type(exc).__name__}: {exc})"
            ) from exc
        return answer


def _records(body: str) -> list[dict[str, Any]] | None:
    """The S3 event records of a message body (delivered straight or through SNS); [] for
    S3's test event; None for anything else."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification":
            doc = json.loads(doc.get("Message", ""))
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        return None
    if not all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records):
        return None
    return records


def _sqs_client(source: S3SourcePlan) -> Any:
    """An SQS client in the bucket's region (where S3 sends its notifications), on the default
    credential chain; the plan's endpoint for the source is SQS's too (moto serves both)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    from migrator.stores.s3_config import resolve_use_fips

    try:
        session = boto3.session.Session()
        region = source.region or session.region_name
        config = Config(  # type: ignore[call-arg]  # its stubs lack ignore_configured_endpoint_urls
            use_fips_endpoint=resolve_use_fips(None, region, source.endpoint_url),
            retries={"mode": "standard", "total_max_attempts": 5},
            connect_timeout=10,
            read_timeout=30,
            # Endpoints come from the plan alone, as for the bucket (stores/s3_config.py).
            ignore_configured_endpoint_urls=True,
        )
        return session.client(
            "sqs", region_name=region, endpoint_url=source.endpoint_url, config=config
        )
    except BotoCoreError as exc:
        raise SourceError(f"SQS client for region {source.region!r}: {exc}") from exc

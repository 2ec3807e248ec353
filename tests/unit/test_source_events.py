"""Reading an S3 source's change events from its queue, with a queue held in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from migrator.errors import UsageError
from migrator.plan.model import DatasetPlan, load_plan
from migrator.sources.events import EventQueue
from tests.planfiles import write_plan

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/migrator-events"


class FakeQueue:
    """receive_message and delete_message_batch, as SQS answers them."""

    def __init__(self, bodies: list[str]) -> None:
        self.messages = {f"r{i}": body for i, body in enumerate(bodies)}
        self.hidden: list[str] = []  # handed out, not visible again within this test
        self.gone: list[str] = []

    def receive_message(self, **request: Any) -> dict[str, Any]:
        assert request["QueueUrl"] == QUEUE and request["MaxNumberOfMessages"] <= 10
        handed = [
            {"ReceiptHandle": handle, "Body": body}
            for handle, body in self.messages.items()
            if handle not in self.hidden
        ][: request["MaxNumberOfMessages"]]
        self.hidden += [message["ReceiptHandle"] for message in handed]
        return {"Messages": handed} if handed else {}

    def delete_message_batch(self, **request: Any) -> dict[str, Any]:
        assert len(request["Entries"]) <= 10
        self.gone += [entry["ReceiptHandle"] for entry in request["Entries"]]
        return {"Successful": request["Entries"]}


def s3_event(
    key: str, event: str = "ObjectCreated:Put", bucket: str = "old", seq: str = "1"
) -> str:
    record = {
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "sequencer": seq}},
    }
    return json.dumps({"Records": [record]})


@pytest.fixture
def dataset(tmp_path: Path) -> DatasetPlan:
    datasets = """\
  - {name: profiles, kind: records, format: jsonl, key: user_id, shards: 2, include: ['*.jsonl'],
     source: {kind: s3, bucket: old, prefix: export/, region: us-east-1}}
"""
    return load_plan(write_plan(tmp_path, datasets=datasets), check_sources=False).datasets[0]


def test_changes_below_the_prefix_are_read_and_others_left_queued(dataset: DatasetPlan) -> None:
    bodies = [
        s3_event("export/a+b.jsonl"),  # S3 sends keys URL-encoded: "a b.jsonl"
        s3_event("export/c.jsonl", "ObjectRemoved:Delete", seq="2"),
        s3_event("export/README.txt"),  # not included: read, no change
        s3_event("export/c.jsonl", "ObjectTagging:Put"),  # tags: the listing is the same
        s3_event("elsewhere/d.jsonl"),  # another consumer's
        s3_event("export/e.jsonl", bucket="other"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
        json.dumps({"Type": "Notification", "Message": s3_event("export/f.jsonl", seq="3")}),
        "not json",
    ]
    fake = FakeQueue(bodies * 2)  # more than one ReceiveMessage's worth
    queue = EventQueue(dataset, QUEUE, client=fake)

    batch = queue.receive()

    names = sorted({(e.name, e.event) for e in batch.changes})
    assert names == [
        ("a b.jsonl", "ObjectCreated:Put"),
        ("c.jsonl", "ObjectRemoved:Delete"),
        ("f.jsonl", "ObjectCreated:Put"),
    ]
    assert len(batch.receipts) == 2 * 6 and batch.others == 2 * 3
    queue.acknowledge(batch)
    assert sorted(fake.gone) == sorted(batch.receipts)


def test_the_same_events_make_the_same_key_in_any_order(dataset: DatasetPlan) -> None:
    one = [s3_event("export/a.jsonl", seq="1"), s3_event("export/b.jsonl", seq="2")]
    first = EventQueue(dataset, QUEUE, client=FakeQueue(one)).receive()
    again = EventQueue(dataset, QUEUE, client=FakeQueue(one[::-1])).receive()
    later = EventQueue(dataset, QUEUE, client=FakeQueue([s3_event("export/a.jsonl", seq="9")]))
    assert first.key() == again.key() != later.receive().key()


def test_an_empty_queue_is_no_change(dataset: DatasetPlan) -> None:
    batch = EventQueue(dataset, QUEUE, client=FakeQueue([])).receive()
    assert batch.changes == [] and batch.receipts == [] and batch.others == 0


def test_only_s3_sources_have_change_events(tmp_path: Path) -> None:
    datasets = """\
  - {name: profiles, kind: records, format: jsonl, key: user_id, shards: 2,
     source: {kind: local, path: data}}
"""
    ds = load_plan(write_plan(tmp_path, datasets=datasets), check_sources=False).datasets[0]
    with pytest.raises(UsageError, match="dataset profiles: change events are read for S3"):
        EventQueue(ds, QUEUE, client=FakeQueue([]))

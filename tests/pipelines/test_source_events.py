"""The source sensor of an S3 dataset whose bucket sends its event notifications to SQS (moto):
a tick reads the queue, never lists the bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from dagster import DagsterInstance, RunRequest, build_sensor_context, instance_for_test

from pipelines import build_definitions
from tests.planfiles import write_plan

pytestmark = pytest.mark.integration


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def sqs_client(endpoint_url: str) -> Any:
    return boto3.session.Session().client(
        "sqs", region_name="us-east-1", endpoint_url=endpoint_url, config=Config(proxies={})
    )


def test_a_bucket_change_event_asks_for_one_sync_and_is_then_deleted(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, bucket = s3_bucket
    s3 = boto3.session.Session().client(
        "s3", region_name="us-east-1", endpoint_url=endpoint, config=Config(proxies={})
    )
    sqs = sqs_client(endpoint)
    queue_url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
            ]
        },
    )
    datasets = f"""\
  - {{name: videos, kind: objects, shards: 2,
     source: {{kind: s3, bucket: {bucket}, prefix: export/, region: us-east-1,
               endpoint_url: '{endpoint}'}}}}
"""
    defs = build_definitions(
        write_plan(tmp_path, datasets=datasets), "production", events={"videos": queue_url}
    )
    sensor = defs.resolve_sensor_def("videos_source_changed")
    assert sensor.minimum_interval_seconds == 30  # a queue is cheap to read

    def tick() -> tuple[list[RunRequest], str | None, str | None]:
        context = build_sensor_context(
            instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()
        )
        data = sensor.evaluate_tick(context)
        return list(data.run_requests or []), data.cursor, data.skip_message

    drained, _, skipped = tick()  # S3's test event, if it sent one: nothing to sync
    assert drained == [] and skipped == "videos: no change events"

    s3.put_object(Bucket=bucket, Key="export/a.mp4", Body=b"a" * 100)
    s3.put_object(Bucket=bucket, Key="export/b.mp4", Body=b"b" * 100)
    requests, cursor, _ = tick()

    assert cursor is not None and len(cursor) == 64
    assert [r.run_key for r in requests] == [f"{cursor}/shard-0", f"{cursor}/shard-1"]
    # The events were deleted once the sync was asked for: the next tick has nothing.
    assert tick()[0] == []
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }

    s3.delete_object(Bucket=bucket, Key="export/a.mp4")
    removed, cursor2, _ = tick()
    assert removed and cursor2 not in (None, cursor)

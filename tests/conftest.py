from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from migrator.demo.motoserver import MotoServer, s3_client, start_moto_server

# Dummy values so boto3 clients built without explicit credentials never look for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with start_moto_server() as server:
        yield server


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> tuple[str, str]:
    """A fresh, empty bucket on the session's moto server: (endpoint_url, bucket_name)."""
    bucket = f"test-{uuid.uuid4().hex}"
    s3_client(moto_server.endpoint_url).create_bucket(Bucket=bucket)
    return moto_server.endpoint_url, bucket

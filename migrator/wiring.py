"""Builds the adapters a plan names: its store, key provider and state store."""

from __future__ import annotations

from migrator.errors import UsageError
from migrator.keys.local import LocalKeyProvider
from migrator.keys.provider import KeyProvider
from migrator.plan.model import Plan
from migrator.state.sqlite import SqliteStateStore
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore

STATE_FILE = "state.sqlite"


def open_store(plan: Plan) -> ObjectStore:
    dest = plan.destination
    if dest.kind == "local":
        assert dest.path is not None  # enforced by the plan model
        prefix = (dest.prefix or "").strip("/")
        return LocalStore(dest.path / prefix if prefix else dest.path)
    if dest.kind == "s3":
        from migrator.stores.s3 import S3Store  # boto3 costs ~0.1 s to import: only when needed

        assert dest.bucket is not None
        return S3Store(
            dest.bucket,
            dest.prefix or "",
            region=dest.region,
            endpoint_url=dest.endpoint_url,
            max_pool_connections=max(10, plan.upload_concurrency * 2),
        )
    raise UsageError(
        f"{plan.plan_path}: destination.kind: {dest.kind!r} destinations are not supported by"
        " this build yet (use local or s3)"
    )


def open_key_provider(plan: Plan) -> KeyProvider:
    keys = plan.keys
    if keys.provider == "local":
        assert keys.kek_file is not None
        return LocalKeyProvider(keys.kek_file)
    raise UsageError(
        f"{plan.plan_path}: keys.provider: {keys.provider!r} is not supported by this build yet"
        " (use local)"
    )


def open_state(plan: Plan) -> SqliteStateStore:
    return SqliteStateStore(plan.state_dir / STATE_FILE)

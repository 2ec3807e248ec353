"""Resources: thin shells around migrator's adapters (the sets per deployment: definitions.py).

`PlanResource` loads the plan; a target opens the store, key provider and state store a run
writes through, always together, so a dry-run store never meets the real state store.
`CloudTarget` is migrator.wiring; `StandInTarget` is the dry run: moto or Azurite on 127.0.0.1
when given, else a local folder; a throwaway KEK; state in STATE_DIR/dagster-dry-run (apart
from the real run's, and from the CLI's dry run, which clears STATE_DIR/dry-run).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, Failure

from migrator.errors import EXIT_RUNTIME, MigratorError
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.plan.model import Plan, load_plan
from migrator.repository.names import manifest_key
from migrator.residency import enforce_residency
from migrator.sizes import parse_rate
from migrator.state.store import StateDB
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.wiring import open_key_provider, open_state, open_store
from migrator.write.run import BULK_GENERATION


@dataclass(frozen=True, slots=True)
class Adapters:
    """What a MigrationRun or a Verifier takes: the plan as this target sees it, and its I/O."""

    plan: Plan
    store: ObjectStore
    provider: KeyProvider
    state: StateDB
    dry_run: bool

    def manifest_uri(self, dataset: str, shard: int) -> str:
        heads = self.state.shard_heads(dataset, shard)
        key = heads[-1].manifest_key if heads else manifest_key(dataset, BULK_GENERATION, shard)
        return f"{self.store.describe().rstrip('/')}/{key}"


# Dagster's resources subclass ConfigurableResource bare; its type parameter is for factories.
class PlanResource(ConfigurableResource):  # type: ignore[type-arg]
    """The plan file; local sources are not checked at load (they may live on the workers)."""

    path: str

    def load(self) -> Plan:
        return load_plan(self.path, check_sources=False)


class TargetResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where a run writes: store, key provider and state store, opened together."""

    @contextlib.contextmanager
    def open(self, plan: Plan) -> Iterator[Adapters]:
        """Runtime errors (store, keys, state, source) go on to the retry policy; a bad plan, a
        residency refusal or an integrity error fails at once: no retry can fix it."""
        try:
            with self._adapters(plan) as adapters:
                yield adapters
        except MigratorError as exc:
            if exc.exit_code == EXIT_RUNTIME:
                raise
            raise Failure(f"{type(exc).__name__}: {exc}", allow_retries=False) from exc

    def _adapters(self, plan: Plan) -> contextlib.AbstractContextManager[Adapters]:
        raise NotImplementedError


class CloudTarget(TargetResource):
    """The plan's own destination and key service (migrator.wiring), residency checked first."""

    bandwidth_limit: str = ""  # e.g. "200MiB/s" for this process's uploads; "": the plan's

    @contextlib.contextmanager
    def _adapters(self, plan: Plan) -> Iterator[Adapters]:
        enforce_residency(plan)
        rate = parse_rate(self.bandwidth_limit) if self.bandwidth_limit else None
        store = open_store(plan, bandwidth_limit=rate)
        with open_state(plan) as state:
            yield Adapters(plan, store, open_key_provider(plan), state, dry_run=False)


class StandInTarget(TargetResource):
    """The dry run: nothing reaches the plan's clouds or its key service."""

    s3_endpoint_url: str = ""  # a moto server for S3 destinations, e.g. http://127.0.0.1:5000
    azure_connection_string: str = ""  # Azurite, for Azure destinations

    @contextlib.contextmanager
    def _adapters(self, plan: Plan) -> Iterator[Adapters]:
        # The real destination's residency, as the rehearsal checks it (no secret read).
        enforce_residency(plan, rehearsal=True)
        workdir = plan.state_dir / "dagster-dry-run"
        rehearsed = plan.model_copy(update={"state_dir": workdir / "state"})
        provider = LocalKeyProvider(_throwaway_kek(workdir / "dry-run-kek.key"))
        with StateDB.sqlite_file(workdir / "state.sqlite") as state:
            yield Adapters(rehearsed, self._store(plan, workdir), provider, state, dry_run=True)

    def _store(self, plan: Plan, workdir: Path) -> ObjectStore:
        dest = plan.destination  # the plan's multipart sizes: uploads go as they really would
        parts = {
            "multipart_threshold": dest.multipart_threshold,
            "part_size": dest.upload_part_size,
        }
        sizes: dict[str, Any] = {name: size for name, size in parts.items() if size}
        if dest.kind == "s3" and self.s3_endpoint_url:
            from migrator.demo.motoserver import s3_client
            from migrator.stores.s3 import S3Store

            assert dest.bucket is not None  # the plan model requires it
            region = dest.region or "us-east-1"
            client = s3_client(self.s3_endpoint_url, region=region)
            where = {} if region == "us-east-1" else {"LocationConstraint": region}
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=dest.bucket, CreateBucketConfiguration=where)  # type: ignore[arg-type]
            return S3Store(dest.bucket, dest.prefix or "", client=client, **sizes)
        if dest.kind == "azure" and self.azure_connection_string:
            from azure.core.exceptions import ResourceExistsError
            from azure.storage.blob import ContainerClient

            from migrator.stores.azure import AzureBlobStore

            assert dest.bucket is not None  # the plan model requires it
            conn = self.azure_connection_string
            with contextlib.suppress(ResourceExistsError):
                ContainerClient.from_connection_string(conn, dest.bucket).create_container()
            return AzureBlobStore(dest.bucket, dest.prefix or "", connection_string=conn, **sizes)
        return LocalStore(workdir / "dest", fsync=False)


def _throwaway_kek(path: Path) -> Path:
    """One KEK for every step process of the dry run: made aside, then linked into place
    (atomic, and refused if another process won), so no one ever reads a half-written file."""
    if not path.exists():
        aside = path.with_name(f"{path.name}.{os.getpid()}")
        aside.unlink(missing_ok=True)
        init_kek_file(aside)
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
    return path

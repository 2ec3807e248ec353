"""Stand-ins for a plan's clouds on this machine, for its dry runs: moto for S3 and KMS, Azurite
for Blob, else a local folder; a throwaway KEK; a state store of their own; for landing tables
a private PostgreSQL on 127.0.0.1.

Both dry runs go through them: `migrator run --dry-run` and `migrator land --dry-run`
(rehearsal.py), which start the emulators they need and stop them at the end, and Dagster's
dry-run target, which is given long-lived ones (or none, and writes to folders). Nothing reaches
the plan's destination, key service, landing buckets or databases, and the dry run's state
stays apart from the real run's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrator.demo.standin_tables import (
    check_private_postgres,
    database_place,
    loopback_database,
    real_table,
    start_private_postgres,
    tables_as_files,
)
from migrator.demo.stopping import StopsOnExit
from migrator.errors import UsageError
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.plan.landing import LandingTablePlan
from migrator.plan.model import (
    AwsKmsKekPlan,
    AzureDestinationPlan,
    AzureKeyVaultKekPlan,
    DestinationPlan,
    Plan,
    S3DestinationPlan,
)
from migrator.repository.names import (
    dagster_dry_run_dir,
    dry_run_destination,
    dry_run_kek,
    dry_run_landing,
    dry_run_state_dir,
    dry_run_state_file,
)
from migrator.residency import ResidencyCheck, enforce_residency
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.wiring import multipart_sizes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from migrator.keys.aws_kms import AwsKmsKeyProvider


def real_destination(plan: Plan) -> str:
    """The plan's destination, as a dry run names what stood in for it."""
    return real_place(plan.destination)


def real_place(d: DestinationPlan) -> str:
    """A destination or landing bucket, as a dry run names what stood in for it."""
    if isinstance(d, S3DestinationPlan):
        return f"s3://{d.bucket}/{d.prefix} ({d.region})"
    if isinstance(d, AzureDestinationPlan):
        return f"{d.account_url}/{d.bucket}/{d.prefix}"
    return f"local {d.path}"


def throwaway_kek(path: Path) -> Path:
    """One KEK for every process of a dry run: made aside, then linked into place (atomic, and
    refused if another process won), so no one ever reads a half-written file."""
    if not path.exists():
        aside = path.with_name(f"{path.name}.{os.getpid()}")
        aside.unlink(missing_ok=True)
        init_kek_file(aside)
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
    return path


class StandIns(StopsOnExit):
    """One dry run's stand-ins, in `workdir`. The plan's residency is checked first, as a
    rehearsal checks it (no secret is read); what the stand-ins start ends when they stop.
    `substitutions` says, for the report, what stood in for what.

    The emulators given (`s3_endpoint_url`, `azure_connection_string`, `postgres_url`: a
    PostgreSQL on 127.0.0.1) are used as they are; with `start`, those missing are started when
    first needed; else a folder stands in. `tables=False` lands no table: its records go as
    per-shard files into a folder instead (landing_plan)."""

    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        *,
        allow_loopback: bool = False,
        s3_endpoint_url: str | None = None,
        azure_connection_string: str | None = None,
        postgres_url: str | None = None,
        start: bool = True,
        tables: bool = True,
    ) -> None:
        checks = enforce_residency(plan, allow_loopback=allow_loopback, rehearsal=True)
        self.residency: list[ResidencyCheck] = checks
        self.workdir = workdir
        self.destination = real_destination(plan)
        # The plan as the stand-ins see it: its spools and markers in the dry run's folder.
        self.plan = plan.model_copy(update={"state_dir": dry_run_state_dir(workdir)})
        self.substitutions: list[str] = []
        self._started = contextlib.ExitStack()
        self._moto_url = s3_endpoint_url or None
        self._azure = azure_connection_string or None
        self._azure_where = _blob_endpoint(self._azure) if self._azure else ""
        self._postgres_url = loopback_database(postgres_url) if postgres_url else None
        self._start = start
        self._tables = tables
        self._lock = threading.Lock()  # landing opens targets from its workers
        self._landings: dict[str, ObjectStore] = {}  # dataset -> its landing bucket's stand-in
        self._kms_keys: dict[tuple[str, str], str] = {}  # (region, plan's key) -> moto's
        self._tables_named: set[str] = set()

    @classmethod
    def for_dagster(
        cls,
        plan: Plan,
        *,
        s3_endpoint_url: str | None = None,
        azure_connection_string: str | None = None,
        postgres_url: str | None = None,
    ) -> StandIns:
        """Dagster's dry-run target: one folder that its step processes share, and only the
        long-lived emulators given (a step's own would end with the step)."""
        return cls(
            plan,
            dagster_dry_run_dir(plan.state_dir),
            s3_endpoint_url=s3_endpoint_url,
            azure_connection_string=azure_connection_string,
            postgres_url=postgres_url,
            start=False,
        )

    def stop(self) -> None:
        """Stops the emulators and the PostgreSQL these stand-ins started."""
        self._started.close()

    def state(self) -> StateDB:
        """The dry run's own state store: a SQLite file in its folder, whatever the plan names."""
        return StateDB.sqlite_file(dry_run_state_file(self.workdir))

    def store(self) -> ObjectStore:
        """The destination's stand-in: moto for S3, Azurite for Azure, else a local folder. The
        plan's multipart sizes and Object Lock retention are kept: uploads go as they really
        would."""
        dest = self.plan.destination
        if isinstance(dest, S3DestinationPlan) and (self._moto_url or self._start):
            self.substitutions.append(f"destination {self.destination} → moto S3 at {self._moto()}")
            return self._s3(dest, object_lock=dest.retention is not None)
        if isinstance(dest, AzureDestinationPlan) and (self._azure or self._start):
            where = self._azurite()[1]
            self.substitutions.append(f"destination {self.destination} → Azurite at {where}")
            return self._container(dest, multipart_sizes(self.plan))
        folder = dry_run_destination(self.workdir)
        self.substitutions.append(f"destination {self.destination} → {folder}")
        return LocalStore(folder, fsync=False)

    # --- landing ------------------------------------------------------------------------------

    def landing_store(self, plan: Plan, dest: DestinationPlan) -> ObjectStore:
        """A landing bucket's stand-in (an `OpenStore`): a bucket of its name on moto, under a
        key made in moto's KMS; a container of its name on Azurite; else a folder of the dry
        run's. Opened once per dataset."""
        dataset = _landing_dataset(plan, dest)
        with self._lock:
            found = self._landings.get(dataset)
            if found is not None:
                return found
            real = f"landing {real_place(dest)} of {dataset}"
            if isinstance(dest, S3DestinationPlan) and (self._moto_url or self._start):
                store, arn = self._s3_landing(dest)
                where = f"moto S3 at {self._moto()} under moto KMS key {arn}"
                real += f" under KMS key {dest.sse_kms_key_id}"
            elif isinstance(dest, AzureDestinationPlan) and (self._azure or self._start):
                store = self._container(dest, multipart_sizes(plan, dest))
                where = f"Azurite at {self._azurite()[1]}"
            else:
                folder = dry_run_landing(self.workdir, dataset)
                store, where = LocalStore(folder, fsync=False), str(folder)
            self.substitutions.append(f"{real} → {where}")
            self._landings[dataset] = store
            return store

    def table_url(self, plan: Plan, table: LandingTablePlan) -> str:
        """A landing table's stand-in database (a `TableUrl`): the PostgreSQL given, else a
        private one started now on 127.0.0.1; never the one the plan's `url_env` names."""
        dataset = _landing_dataset(plan, table)
        with self._lock:
            if self._postgres_url is None:
                if not self._start:
                    raise UsageError(
                        f"dataset {dataset}: no PostgreSQL stands in for table {table.name}"
                    )
                self._postgres_url = start_private_postgres(self._started)
            if dataset not in self._tables_named:
                self._tables_named.add(dataset)
                real = real_table(table, dataset)
                self.substitutions.append(f"{real} → {database_place(self._postgres_url)}")
            return self._postgres_url

    def landing_plan(self, plan: Plan) -> Plan:
        """The plan as the stand-ins land it. With no PostgreSQL to stand in for its tables
        (none given and none to start, or `tables=False`), each table's records land as
        per-shard files in the dataset's landing bucket, or a folder; a PostgreSQL to start is
        looked for now, so a missing one is said before anything runs."""
        if not any(d.landing and d.landing.table for d in plan.datasets):
            return plan
        if self._tables and (self._postgres_url or self._start):
            if self._postgres_url is None:
                check_private_postgres()
            return plan
        return tables_as_files(plan, self.workdir, self.substitutions)

    # --- keys ---------------------------------------------------------------------------------

    def keys(self) -> KeyProvider:
        """moto's KMS for an aws-kms plan, else a throwaway KEK."""
        keys = self.plan.keys
        return self.kms(keys) if isinstance(keys, AwsKmsKekPlan) else self.kek()

    def kms(self, keys: AwsKmsKekPlan) -> AwsKmsKeyProvider:
        """A data key and a signing key made now in moto's KMS, standing in for `keys`."""
        from migrator.demo.motoserver import kms_client
        from migrator.keys.aws_kms import AwsKmsKeyProvider

        name, dest = self.plan.name, self.plan.destination
        url = self._moto()
        near = dest.region if isinstance(dest, S3DestinationPlan) else None
        region = keys.region or near or "us-east-1"
        kms = kms_client(url, region=region)
        arn = kms.create_key(Description=f"dry run of {name}")["KeyMetadata"]["Arn"]
        signing = kms.create_key(
            Description=f"dry run of {name}: signing key",
            KeySpec="ECC_NIST_P256",
            KeyUsage="SIGN_VERIFY",
        )["KeyMetadata"]["Arn"]
        self.substitutions.append(f"KMS key {keys.key_id} → moto KMS key {arn}")
        named = keys.signing_key_id or "(none: a real run needs keys.signing_key_id)"
        self.substitutions.append(f"KMS signing key {named} → moto KMS key {signing}")
        return AwsKmsKeyProvider(
            arn, region=region, endpoint_url=url, client=kms, signing_key_id=signing
        )

    def kek(self) -> LocalKeyProvider:
        """A throwaway local KEK, shared by the dry run's processes."""
        keys = self.plan.keys
        if isinstance(keys, AwsKmsKekPlan):
            what = f"KMS key {keys.key_id}"
        elif isinstance(keys, AzureKeyVaultKekPlan):
            what = f"Key Vault key {keys.key_name} in {keys.vault_url} (no emulator)"
        else:
            what = f"KEK file {keys.kek_file}"
        self.substitutions.append(f"{what} → a throwaway local KEK")
        return LocalKeyProvider(throwaway_kek(dry_run_kek(self.workdir)))

    # --- emulators ----------------------------------------------------------------------------

    def _moto(self) -> str:
        if self._moto_url is None:
            from migrator.demo.motoserver import start_moto_server

            self._moto_url = self._started.enter_context(start_moto_server()).endpoint_url
        return self._moto_url

    def _azurite(self) -> tuple[str, str]:
        """Azurite's connection string and where it serves, started when none was given."""
        if self._azure is None:
            from migrator.demo.azurite import start_azurite

            azurite = self._started.enter_context(start_azurite())
            self._azure, self._azure_where = azurite.connection_string, azurite.blob_url
        return self._azure, self._azure_where

    def _bucket(self, bucket: str, region: str, *, object_lock: bool = False) -> S3Client:
        from migrator.demo.motoserver import s3_client

        client = s3_client(self._moto(), region=region)
        where = {} if region == "us-east-1" else {"LocationConstraint": region}
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(
                Bucket=bucket,
                # The stubs name every region as a Literal; the plan's is checked, not literal.
                CreateBucketConfiguration=where,  # type: ignore[arg-type]
                ObjectLockEnabledForBucket=object_lock,  # as the real run will
            )
        return client

    def _s3(self, dest: S3DestinationPlan, *, object_lock: bool) -> ObjectStore:
        from migrator.stores.s3 import S3Store
        from migrator.stores.s3_retention import ObjectRetention

        client = self._bucket(dest.bucket, dest.region, object_lock=object_lock)
        lock = dest.retention
        retention = None if lock is None else ObjectRetention.of(lock.mode, lock.days)
        sizes = multipart_sizes(self.plan)
        return S3Store(dest.bucket, dest.prefix, client=client, retention=retention, **sizes)

    def _s3_landing(self, dest: S3DestinationPlan) -> tuple[ObjectStore, str]:
        """A landing bucket on moto under SSE-KMS with a key of moto's, one per plan's key."""
        from migrator.demo.motoserver import kms_client
        from migrator.stores.s3 import S3Store

        client = self._bucket(dest.bucket, dest.region)
        real_key = dest.sse_kms_key_id or ""
        arn = self._kms_keys.get((dest.region, real_key))
        if arn is None:
            kms = kms_client(self._moto(), region=dest.region)
            made = kms.create_key(Description=f"dry run of {self.plan.name}: landing key")
            arn = self._kms_keys[(dest.region, real_key)] = str(made["KeyMetadata"]["Arn"])
        sizes = multipart_sizes(self.plan, dest)
        store = S3Store(dest.bucket, dest.prefix, client=client, sse_kms_key_id=arn, **sizes)
        return store, arn

    def _container(self, dest: AzureDestinationPlan, sizes: dict[str, Any]) -> ObjectStore:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContainerClient

        from migrator.stores.azure import AzureBlobStore

        connection_string = self._azurite()[0]
        container = ContainerClient.from_connection_string(connection_string, dest.bucket)
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        return AzureBlobStore(
            dest.bucket,
            dest.prefix,
            connection_string=connection_string,
            encryption_scope=dest.encryption_scope,
            **sizes,
        )


def _landing_dataset(plan: Plan, section: object) -> str:
    """The dataset whose landing bucket or table `section` is."""
    for ds in plan.datasets:
        if ds.landing is not None and section in (ds.landing.bucket, ds.landing.table):
            return ds.name
    raise ValueError(f"plan {plan.name!r} lands no dataset into {section!r}")


def _blob_endpoint(connection_string: str) -> str:
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return fields.get("BlobEndpoint", "its connection string")

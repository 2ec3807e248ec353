"""Stand-ins for a plan's clouds on this machine, for its dry runs: moto for S3 and KMS, Azurite
for Blob, else a local folder; a throwaway KEK; a state store of their own.

Both dry runs go through them: `migrator run --dry-run` (rehearsal.py), which starts the
emulators it needs and stops them at the end, and Dagster's dry-run target, which is given
long-lived ones (or none, and writes to a folder). Nothing reaches the plan's destination or
key service, and the dry run's state stays apart from the real run's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from migrator.demo.stopping import StopsOnExit
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.plan.model import (
    AwsKmsKekPlan,
    AzureDestinationPlan,
    AzureKeyVaultKekPlan,
    Plan,
    S3DestinationPlan,
)
from migrator.repository.names import (
    dagster_dry_run_dir,
    dry_run_destination,
    dry_run_kek,
    dry_run_state_dir,
    dry_run_state_file,
)
from migrator.residency import ResidencyCheck, enforce_residency
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.wiring import multipart_sizes

if TYPE_CHECKING:
    from migrator.keys.aws_kms import AwsKmsKeyProvider


def real_destination(plan: Plan) -> str:
    """The plan's destination, as a dry run names what stood in for it."""
    d = plan.destination
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
    `substitutions` says, for the report, what stood in for what."""

    def __init__(self, plan: Plan, workdir: Path, *, allow_loopback: bool = False) -> None:
        checks = enforce_residency(plan, allow_loopback=allow_loopback, rehearsal=True)
        self.residency: list[ResidencyCheck] = checks
        self.workdir = workdir
        self.destination = real_destination(plan)
        # The plan as the stand-ins see it: its spools and markers in the dry run's folder.
        self.plan = plan.model_copy(update={"state_dir": dry_run_state_dir(workdir)})
        self.substitutions: list[str] = []
        self._started = contextlib.ExitStack()
        self._moto_url: str | None = None

    @classmethod
    def for_dagster(cls, plan: Plan) -> StandIns:
        """Dagster's dry-run target: one folder that its step processes share."""
        return cls(plan, dagster_dry_run_dir(plan.state_dir))

    def stop(self) -> None:
        """Stops the emulators these stand-ins started."""
        self._started.close()

    def state(self) -> StateDB:
        """The dry run's own state store: a SQLite file in its folder, whatever the plan names."""
        return StateDB.sqlite_file(dry_run_state_file(self.workdir))

    def store(
        self,
        *,
        s3_endpoint_url: str | None = None,
        azure_connection_string: str | None = None,
        start: bool = True,
    ) -> ObjectStore:
        """The destination's stand-in: moto for S3, Azurite for Azure (the one given, else with
        `start` one started now), else a local folder. The plan's multipart sizes and Object
        Lock retention are kept: uploads go as they really would."""
        dest = self.plan.destination
        if isinstance(dest, S3DestinationPlan) and (s3_endpoint_url or start):
            return self._s3(dest, s3_endpoint_url or self._moto())
        if isinstance(dest, AzureDestinationPlan) and (azure_connection_string or start):
            return self._azure(dest, azure_connection_string)
        folder = dry_run_destination(self.workdir)
        self.substitutions.append(f"destination {self.destination} → {folder}")
        return LocalStore(folder, fsync=False)

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

    def _moto(self) -> str:
        if self._moto_url is None:
            from migrator.demo.motoserver import start_moto_server

            self._moto_url = self._started.enter_context(start_moto_server()).endpoint_url
        return self._moto_url

    def _s3(self, dest: S3DestinationPlan, url: str) -> ObjectStore:
        from migrator.demo.motoserver import s3_client
        from migrator.stores.s3 import S3Store
        from migrator.stores.s3_retention import ObjectRetention

        region = dest.region
        client = s3_client(url, region=region)
        where = {} if region == "us-east-1" else {"LocationConstraint": region}
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(
                Bucket=dest.bucket,
                # The stubs name every region as a Literal; the plan's is checked, not literal.
                CreateBucketConfiguration=where,  # type: ignore[arg-type]
                ObjectLockEnabledForBucket=dest.retention is not None,  # as the real run will
            )
        self.substitutions.append(f"destination {self.destination} → moto S3 at {url}")
        lock = dest.retention
        retention = None if lock is None else ObjectRetention.of(lock.mode, lock.days)
        sizes = multipart_sizes(self.plan)
        return S3Store(dest.bucket, dest.prefix, client=client, retention=retention, **sizes)

    def _azure(self, dest: AzureDestinationPlan, connection_string: str | None) -> ObjectStore:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContainerClient

        from migrator.demo.azurite import start_azurite
        from migrator.stores.azure import AzureBlobStore

        if connection_string is None:
            azurite = self._started.enter_context(start_azurite())
            connection_string, where = azurite.connection_string, azurite.blob_url
        else:
            where = _blob_endpoint(connection_string)
        container = ContainerClient.from_connection_string(connection_string, dest.bucket)
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        self.substitutions.append(f"destination {self.destination} → Azurite at {where}")
        sizes = multipart_sizes(self.plan)
        return AzureBlobStore(
            dest.bucket, dest.prefix, connection_string=connection_string, **sizes
        )


def _blob_endpoint(connection_string: str) -> str:
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return fields.get("BlobEndpoint", "its connection string")

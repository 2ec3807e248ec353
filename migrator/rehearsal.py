"""`migrator run PLAN --dry-run`: the same code path, with the plan's clouds swapped for local
stand-ins (moto for S3 and KMS, Azurite for Blob) on 127.0.0.1, every chunk read back, and a
forecast of the real run.

Nothing is sent to the plan's real destination or key service. The rehearsal's state lives in
`STATE_DIR/dry-run`, apart from the real run's.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.demo.sample import write_sample
from migrator.errors import MigratorError
from migrator.forecast.model import DatasetVolume, Forecast, forecast, records_chunks
from migrator.keys.datakey import DataKey
from migrator.keys.local import LocalKeyProvider, init_kek_file
from migrator.keys.provider import KeyProvider
from migrator.plan.model import DatasetPlan, Plan, SourcePlan
from migrator.read.verify import Verifier, VerifyReport
from migrator.repository.names import dry_run_dir
from migrator.residency import ResidencyCheck, enforce_residency
from migrator.sizes import MiB, format_size
from migrator.sources.base import Source
from migrator.sources.factory import open_source
from migrator.sources.local import LocalSource
from migrator.state.store import StateDB
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.wrappers import CountingStore
from migrator.wiring import multipart_sizes
from migrator.write.run import MigrationRun, ProgressSink, RunReport

DEFAULT_SAMPLE = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Sizing:
    real_bytes: int  # the real source's size (listed, or the plan's expected_size)
    parts: int  # object parts, when the real source was listed; 0 when unknown
    encode_rate: float  # bytes a second through this machine's hot loop on this data


RATE_SAMPLE = 32 * 1024 * 1024


def _encode_rate(source: Source, plan: Plan) -> float:
    """The hot loop (xxh3 → zstd → AES-GCM) over every core on up to 32 MiB of the data."""
    buf = bytearray()
    for obj in source.list():
        take = min(obj.size, RATE_SAMPLE - len(buf))
        if take:
            buf += source.read_range(obj, 0, take)
        if len(buf) >= RATE_SAMPLE:
            break
    if not buf:
        return 0.0
    size = min(plan.chunk_size, max(1, len(buf) // 4))
    chunks = [memoryview(buf)[i : i + size] for i in range(0, len(buf), size)]
    key = DataKey(os.urandom(32))
    local = threading.local()

    def seal(index: int) -> None:
        enc = getattr(local, "enc", None) or ChunkEncoder(plan.compression_level)
        local.enc = enc
        ident = ChunkIdentity(ChunkKind.RECORDS, plan.name, "rate", 1, 0, index)
        enc.encode(chunks[index], ident, key)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(seal, range(len(chunks))))
    return len(buf) / (time.perf_counter() - started)


@dataclass
class DryRunReport:
    plan: str
    destination: str
    residency: list[ResidencyCheck]
    substitutions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run: RunReport | None = None
    verify: VerifyReport | None = None
    requests: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    forecast: Forecast | None = None
    bandwidth_limit: int | None = None


def _real_destination(plan: Plan) -> str:
    d = plan.destination
    if d.kind == "s3":
        return f"s3://{d.bucket}/{d.prefix} ({d.region})"
    if d.kind == "azure":
        return f"{d.account_url}/{d.bucket}/{d.prefix}"
    return f"local {d.path}"


class Rehearsal:
    def __init__(
        self,
        plan: Plan,
        *,
        synthetic_size: int = DEFAULT_SAMPLE,
        allow_loopback: bool = False,
        progress: ProgressSink | None = None,
    ) -> None:
        self.plan = plan
        self.synthetic_size = synthetic_size
        self.allow_loopback = allow_loopback
        self.progress = progress
        self.workdir = dry_run_dir(plan.state_dir)

    def run(self) -> DryRunReport:
        checks = enforce_residency(self.plan, allow_loopback=self.allow_loopback, rehearsal=True)
        report = DryRunReport(self.plan.name, _real_destination(self.plan), checks)
        report.bandwidth_limit = self.plan.bandwidth_limit
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        datasets, sizing = self._datasets(report)
        plan = self.plan.model_copy(
            update={"state_dir": self.workdir / "state", "datasets": datasets}
        )
        with ExitStack() as stack:
            store = CountingStore(self._store(stack, report))
            provider = self._keys(stack, report)
            with StateDB.sqlite_file(self.workdir / "state.sqlite") as state:
                run = MigrationRun(plan, store, provider, state, self.progress).run()
                requests = dict(store.requests)
                bytes_sent = store.bytes_sent
                verify = Verifier(plan, store, provider, state, sample=1.0, workers=4).verify()
        report.run, report.verify = run, verify
        report.requests, report.bytes_sent = requests, bytes_sent
        f = self.plan.forecast
        prices = None
        if f.storage_usd_per_gb_month is not None and f.put_usd_per_1000 is not None:
            prices = (f.storage_usd_per_gb_month, f.put_usd_per_1000, f.get_usd_per_1000 or 0.0)
        dest = self.plan.destination
        volumes = [
            self._volume(ds, sizing[ds.name], dr.compression_ratio)
            for ds, dr in zip(plan.datasets, run.datasets, strict=True)
        ]
        report.forecast = forecast(
            volumes,
            kind=dest.kind,
            bandwidth=f.bandwidth,
            machine_limit=self.plan.bandwidth_limit,
            multipart_threshold=(dest.multipart_threshold or 64 * MiB)
            if dest.kind != "local"
            else None,
            part_size=dest.upload_part_size or 16 * MiB,
            prices=prices,
        )
        return report

    def _volume(self, ds: DatasetPlan, sizing: _Sizing, compression: float) -> DatasetVolume:
        if ds.kind == "records":
            chunks = records_chunks(sizing.real_bytes, ds.shards, self.plan.chunk_size)
        else:
            part = ds.part_size or self.plan.chunk_size
            chunks = sizing.parts if sizing.parts else max(1, -(-sizing.real_bytes // part))
        return DatasetVolume(
            name=ds.name,
            kind=ds.kind,
            source_bytes=sizing.real_bytes,
            shards=ds.shards,
            chunks=chunks,
            compression=compression or 1.0,
            encode_rate=sizing.encode_rate,
        )

    # --- sources: the real ones where reachable, else a sample of the same shape ---------

    def _datasets(self, report: DryRunReport) -> tuple[tuple[DatasetPlan, ...], dict[str, _Sizing]]:
        out: list[DatasetPlan] = []
        sizing: dict[str, _Sizing] = {}
        for ds in self.plan.datasets:
            part = ds.part_size or self.plan.chunk_size
            try:
                source = open_source(ds)
                total = parts = 0
                for obj in source.list():
                    total += obj.size
                    parts += max(1, -(-obj.size // part))
                out.append(ds)
                sizing[ds.name] = _Sizing(total, parts, _encode_rate(source, self.plan))
                continue
            except MigratorError as exc:
                reason = str(exc)
            folder = self.workdir / "samples" / ds.name
            write_sample(ds, folder, self.synthetic_size)
            sample = LocalSource(folder)
            real = ds.expected_size or self.synthetic_size
            # Real object sizes are unknown: the forecast counts full parts only (a floor).
            sizing[ds.name] = _Sizing(real, 0, _encode_rate(sample, self.plan))
            report.notes.append(
                f"{ds.name}: source out of reach ({reason}); rehearsed on a"
                f" {format_size(self.synthetic_size)} synthetic sample of the same shape;"
                f" forecast for {'its expected_size' if ds.expected_size else 'the sample only'}"
            )
            out.append(
                ds.model_copy(
                    update={"source": SourcePlan(kind="local", path=folder), "include": None}
                )
            )
        return tuple(out), sizing

    # --- stand-ins for the clouds --------------------------------------------------------

    def _moto(self, stack: ExitStack) -> str:
        if not hasattr(self, "_moto_url"):
            from migrator.demo.motoserver import start_moto_server

            self._moto_url: str = stack.enter_context(start_moto_server()).endpoint_url
        return self._moto_url

    def _store(self, stack: ExitStack, report: DryRunReport) -> ObjectStore:
        dest = self.plan.destination
        sizes = multipart_sizes(self.plan)
        if dest.kind == "s3":
            from migrator.demo.motoserver import s3_client
            from migrator.stores.s3 import S3Store
            from migrator.stores.s3_retention import ObjectRetention

            assert dest.bucket is not None and dest.region is not None
            url = self._moto(stack)
            client = s3_client(url, region=dest.region)
            config = {} if dest.region == "us-east-1" else {"LocationConstraint": dest.region}
            client.create_bucket(
                Bucket=dest.bucket,
                CreateBucketConfiguration=config,  # type: ignore[arg-type]
                ObjectLockEnabledForBucket=dest.retention is not None,  # rehearsed as it will run
            )
            report.substitutions.append(f"destination {report.destination} → moto S3 at {url}")
            lock = dest.retention
            retention = None if lock is None else ObjectRetention.of(lock.mode, lock.days)
            return S3Store(dest.bucket, dest.prefix, client=client, retention=retention, **sizes)
        if dest.kind == "azure":
            from azure.storage.blob import ContainerClient

            from migrator.demo.azurite import start_azurite
            from migrator.stores.azure import AzureBlobStore

            assert dest.bucket is not None
            azurite = stack.enter_context(start_azurite())
            ContainerClient.from_connection_string(
                azurite.connection_string, dest.bucket
            ).create_container()
            report.substitutions.append(
                f"destination {report.destination} → Azurite at {azurite.blob_url}"
            )
            return AzureBlobStore(
                dest.bucket, dest.prefix, connection_string=azurite.connection_string, **sizes
            )
        report.substitutions.append(f"destination {report.destination} → {self.workdir}/dest")
        return LocalStore(self.workdir / "dest", fsync=False)

    def _keys(self, stack: ExitStack, report: DryRunReport) -> KeyProvider:
        keys = self.plan.keys
        if keys.provider == "aws-kms":
            from migrator.demo.motoserver import kms_client
            from migrator.keys.aws_kms import AwsKmsKeyProvider

            url = self._moto(stack)
            region = keys.region or self.plan.destination.region or "us-east-1"
            kms = kms_client(url, region=region)
            arn = kms.create_key(Description=f"dry run of {self.plan.name}")["KeyMetadata"]["Arn"]
            signing = kms.create_key(
                Description=f"dry run of {self.plan.name}: signing key",
                KeySpec="ECC_NIST_P256",
                KeyUsage="SIGN_VERIFY",
            )["KeyMetadata"]["Arn"]
            report.substitutions.append(f"KMS key {keys.key_id} → moto KMS key {arn}")
            named = keys.signing_key_id or "(none: a real run needs keys.signing_key_id)"
            report.substitutions.append(f"KMS signing key {named} → moto KMS key {signing}")
            return AwsKmsKeyProvider(
                arn, region=region, endpoint_url=url, client=kms, signing_key_id=signing
            )
        kek = self.workdir / "dry-run-kek.key"
        init_kek_file(kek)
        what = {
            "azure-keyvault": f"Key Vault key {keys.key_name} in {keys.vault_url} (no emulator)",
            "local": f"KEK file {keys.kek_file}",
        }[keys.provider]
        report.substitutions.append(f"{what} → a throwaway local KEK")
        return LocalKeyProvider(kek)

"""Builds the adapters a plan names: its store, key provider and state store.

Each is imported only when opened: cloud SDKs only when a plan uses them, the state store's
database layer (SQLAlchemy) only for the commands that open one, so a local run starts quickly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from migrator.errors import KeyProviderError, PlanError, UsageError
from migrator.plan.landing import LandingTablePlan
from migrator.plan.model import (
    AwsKmsKekPlan,
    AzureKeyVaultKekPlan,
    DestinationPlan,
    KekPlan,
    LocalDestinationPlan,
    LocalKekPlan,
    Plan,
    S3DestinationPlan,
)
from migrator.residency import enforce_residency
from migrator.state.private import private_dir
from migrator.state.urls import describe_url, state_url_for
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.wrappers import ThrottledStore, TokenBucket

if TYPE_CHECKING:
    from migrator.keys.provider import KeyProvider
    from migrator.state.db import StateDB
    from migrator.stores.s3 import S3Store

STATE_FILE = "state.sqlite"


def _env(plan: Plan, field: str, name: str) -> str:
    """A secret named by the plan: its value never appears in messages."""
    value = os.environ.get(name)
    if not value:
        raise UsageError(f"{plan.plan_path}: {field}: environment variable {name} is not set")
    return value


def azure_credentials(
    plan: Plan, section: str, connection_string_env: str | None, account_key_env: str | None
) -> dict[str, Any]:
    """Keyword arguments for an Azure client: a connection string, an account key, or (with
    neither) azure-identity's default credential, at Azure Government's authority there."""
    if connection_string_env:
        field = f"{section}.connection_string_env"
        return {"connection_string": _env(plan, field, connection_string_env)}
    if account_key_env:
        return {"credential": _env(plan, f"{section}.account_key_env", account_key_env)}
    from migrator.stores.azure_client import government_credential

    return {"credential": government_credential()}


def multipart_sizes(plan: Plan, dest: DestinationPlan | None = None) -> dict[str, Any]:
    """The store arguments for the multipart settings of `dest` (the plan's destination if
    None); the stores' defaults otherwise."""
    dest = plan.destination if dest is None else dest
    sizes: dict[str, Any] = {}
    if isinstance(dest, LocalDestinationPlan):
        return sizes
    if dest.multipart_threshold:
        sizes["multipart_threshold"] = dest.multipart_threshold
    if dest.upload_part_size:
        sizes["part_size"] = dest.upload_part_size
    return sizes


def open_store(
    plan: Plan, *, bandwidth_limit: int | None = None, bucket: TokenBucket | None = None
) -> ObjectStore:
    """The destination, behind the plan's (or the caller's) bandwidth limit if one is set;
    only once the plan's residency and FIPS checks pass (ResidencyError, exit 2)."""
    enforce_residency(plan)
    store = open_destination(plan)
    rate = bandwidth_limit or plan.bandwidth_limit
    if bucket is None and rate:
        bucket = TokenBucket(rate)
    return ThrottledStore(store, bucket) if bucket is not None else store


def open_destination(plan: Plan) -> ObjectStore:
    """The destination store the plan names, without the checks `open_store` makes first."""
    dest = plan.destination
    store = _open_store_at(plan, dest, "destination")
    if isinstance(dest, S3DestinationPlan):
        return _with_retention(plan, dest, cast("S3Store", store))
    return store


def open_landing_store(plan: Plan, dest: DestinationPlan) -> ObjectStore:
    """A landing bucket (a dataset's `landing.bucket`), written under the owner's key (SSE-KMS,
    an encryption scope); only once the plan's residency and FIPS checks pass."""
    enforce_residency(plan)
    index, _ = _landing_of(plan, "bucket", dest)
    return _open_store_at(plan, dest, f"datasets[{index}].landing.bucket")


def _landing_of(plan: Plan, part: str, section: object) -> tuple[int, str]:
    """The index and name of the dataset whose landing `part` (bucket, table) is `section`."""
    for index, dataset in enumerate(plan.datasets):
        if dataset.landing is not None and getattr(dataset.landing, part) == section:
            return index, dataset.name
    raise ValueError(f"plan {plan.name!r} lands no dataset into this {part}")


def _open_store_at(plan: Plan, dest: DestinationPlan, section: str) -> ObjectStore:
    """The store `dest` names (`section`: its place in the plan, for messages)."""
    if isinstance(dest, LocalDestinationPlan):
        prefix = dest.prefix.strip("/")
        return LocalStore(dest.path / prefix if prefix else dest.path)
    sizes = multipart_sizes(plan, dest)
    if isinstance(dest, S3DestinationPlan):
        from migrator.stores.s3 import S3Store

        return S3Store(
            dest.bucket,
            dest.prefix,
            region=dest.region,
            endpoint_url=dest.endpoint_url,
            use_fips=True if plan.fips == "required" else dest.use_fips,
            sse_kms_key_id=dest.sse_kms_key_id,
            max_pool_connections=max(10, plan.upload_concurrency * 2),
            **sizes,
        )
    from migrator.stores.azure import AzureBlobStore

    return AzureBlobStore(
        dest.bucket,
        dest.prefix,
        account_url=dest.account_url,
        max_concurrency=plan.upload_concurrency,
        encryption_scope=dest.encryption_scope,
        **azure_credentials(plan, section, dest.connection_string_env, dest.account_key_env),
        **sizes,
    )


def landing_table_url(plan: Plan, table: LandingTablePlan) -> str:
    """The landing table's database URL, from the variable the plan names (never shown);
    only once the plan's checks pass, its host among them."""
    index, name = _landing_of(plan, "table", table)
    field = f"datasets[{index}].landing.table.url_env"
    url = os.environ.get(table.url_env)
    if not url:
        raise UsageError(
            f"{plan.plan_path}: {field}: environment variable {table.url_env} is not set: it"
            f" holds the database URL dataset {name!r} lands into"
        )
    if not url.startswith(("postgresql://", "postgresql+psycopg2://")):
        raise UsageError(
            f"{plan.plan_path}: {field}: the URL in {table.url_env} must start with"
            " postgresql:// or postgresql+psycopg2://"
        )
    enforce_residency(plan)  # now with the variable set: its host is checked
    return url


def _with_retention(plan: Plan, dest: S3DestinationPlan, store: S3Store) -> S3Store:
    """The plan's Object Lock retention, once the bucket is known to support it: a plan that
    asks for it never writes a commit point that could be deleted."""
    retention = dest.retention
    if retention is None:
        return store
    from migrator.stores.s3_retention import ObjectRetention

    if not store.object_lock_enabled():
        raise PlanError(
            str(plan.plan_path),
            "destination.retention",
            f"the bucket {store.bucket} has no Object Lock enabled, so generation records and"
            " ledger segments cannot be retained: enable Object Lock on the bucket (S3 turns"
            " versioning on with it), use a bucket created with it, or remove"
            " destination.retention",
        )
    store.retention = ObjectRetention.of(retention.mode, retention.days)
    return store


def open_key_provider(plan: Plan) -> KeyProvider:
    """The plan's KEK; with `keys.previous`, a chain that also unwraps with the earlier KEKs;
    only once the plan's residency and FIPS checks pass."""
    enforce_residency(plan)
    fips = plan.fips == "required"
    unset = _unset_signing_key(plan.keys)
    if unset is not None:
        raise PlanError(
            str(plan.plan_path),
            f"keys.{unset}",
            "required: the plan's signing key signs keyrings and the audit ledger, and readers"
            " check them with it (docs/FORMAT.md §10.6)",
        )
    current = open_kek(plan.keys, fips)
    if not plan.keys.previous:
        return current
    previous = []
    for index, kek in enumerate(plan.keys.previous):
        try:
            previous.append(open_kek(kek, fips, current=False))
        except (KeyProviderError, ValueError) as exc:
            raise KeyProviderError(f"keys.previous[{index}]: {exc}") from None
    from migrator.keys.kekchain import KekChain

    return KekChain(current, previous)


def _unset_signing_key(keys: KekPlan) -> str | None:
    """The field naming a cloud KEK's signing key, if the plan leaves it out (a local KEK's
    signing key file has a default)."""
    if isinstance(keys, AwsKmsKekPlan) and keys.signing_key_id is None:
        return "signing_key_id"
    if isinstance(keys, AzureKeyVaultKekPlan) and keys.signing_key_name is None:
        return "signing_key_name"
    return None


def open_kek(keys: KekPlan, fips: bool = False, *, current: bool = True) -> KeyProvider:
    """A KEK and the signing key beside it; an earlier KEK's (`current=False`) only verifies."""
    if isinstance(keys, LocalKekPlan):
        from migrator.keys.local import LocalKeyProvider  # cryptography: only for a command's keys

        return LocalKeyProvider(keys.kek_file, keys.signing_key_file, current=current)
    if isinstance(keys, AwsKmsKekPlan):
        from migrator.keys.aws_kms import AwsKmsKeyProvider

        # An explicit endpoint is used as is (residency made sure it is a FIPS one if needed).
        use_fips = True if fips and keys.endpoint_url is None else None
        return AwsKmsKeyProvider(
            keys.key_id,
            region=keys.region,
            endpoint_url=keys.endpoint_url,
            use_fips=use_fips,
            signing_key_id=keys.signing_key_id,
        )
    from migrator.keys.azure_keyvault import AzureKeyVaultKeyProvider
    from migrator.keys.azure_keyvault_signing import AzureKeyVaultSigner

    signer = None
    if keys.signing_key_name is not None:
        signer = AzureKeyVaultSigner(keys.vault_url, keys.signing_key_name)
    return AzureKeyVaultKeyProvider(keys.vault_url, keys.key_name, signer=signer)


def state_url(plan: Plan) -> str:
    """MIGRATOR_STATE_URL, else the plan's state_url, else SQLite in the plan's state_dir."""
    return state_url_for(plan.state_dir, plan.state_url, STATE_FILE)


def describe_state(plan: Plan) -> str:
    """The state store as messages name it: its file, or its URL without a password."""
    url = state_url(plan)
    return str(sqlite_file(url)) if url.startswith("sqlite") else describe_url(url)


def open_state(plan: Plan) -> StateDB:
    """The plan's state store, migrated to this release's schema and bound to the plan; only
    once the plan's checks pass (residency.state_hosts among them)."""
    from migrator.state.db import StateDB  # the database layer: only once a store is opened

    enforce_residency(plan)
    private_dir(plan.state_dir)  # spools and state: 0700, whichever database holds the state
    state = StateDB(state_url(plan))
    try:
        state.claim_for_plan(plan.name)
    except BaseException:
        state.close()
        raise
    return state


def open_existing_state(plan: Plan) -> StateDB | None:
    """The plan's state store if a run or a rebuild made one (opened once), else None: readers
    such as verify work from the destination without one."""
    enforce_residency(plan)
    url = state_url(plan)
    if url.startswith("sqlite") and not sqlite_file(url).exists():
        return None
    from migrator.state.db import StateDB  # the database layer: only if there is a store

    state = StateDB(url)
    try:
        # A shared database exists before any run; it is the plan's once a run claimed it.
        if not url.startswith("sqlite") and state.get_meta("plan") is None:
            state.close()
            return None
        state.claim_for_plan(plan.name)
    except BaseException:
        state.close()
        raise
    return state


def sqlite_file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    return Path(make_url(url).database or "")

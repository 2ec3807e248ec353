"""Builds the adapters a plan names: its store, key provider and state store.

Cloud SDKs are imported only when a plan uses them, so a local run starts quickly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from migrator.errors import KeyProviderError, UsageError
from migrator.keys.kekchain import KekChain
from migrator.keys.local import LocalKeyProvider
from migrator.keys.provider import KeyProvider
from migrator.plan.model import KekPlan, Plan
from migrator.state.store import StateStore, describe_url, state_url_for
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.wrappers import ThrottledStore, TokenBucket

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
    from migrator.stores.azure import government_credential

    return {"credential": government_credential()}


def multipart_sizes(plan: Plan) -> dict[str, Any]:
    """The store arguments for the plan's multipart settings; the stores' defaults otherwise."""
    dest = plan.destination
    sizes: dict[str, Any] = {}
    if dest.multipart_threshold:
        sizes["multipart_threshold"] = dest.multipart_threshold
    if dest.upload_part_size:
        sizes["part_size"] = dest.upload_part_size
    return sizes


def open_store(
    plan: Plan, *, bandwidth_limit: int | None = None, bucket: TokenBucket | None = None
) -> ObjectStore:
    """The destination, behind the plan's (or the caller's) bandwidth limit if one is set."""
    store = _open_destination(plan)
    rate = bandwidth_limit or plan.bandwidth_limit
    if bucket is None and rate:
        bucket = TokenBucket(rate)
    return ThrottledStore(store, bucket) if bucket is not None else store


def _open_destination(plan: Plan) -> ObjectStore:
    dest = plan.destination
    if dest.kind == "local":
        assert dest.path is not None  # enforced by the plan model
        prefix = (dest.prefix or "").strip("/")
        return LocalStore(dest.path / prefix if prefix else dest.path)
    sizes = multipart_sizes(plan)
    if dest.kind == "s3":
        from migrator.stores.s3 import S3Store

        assert dest.bucket is not None
        return S3Store(
            dest.bucket,
            dest.prefix or "",
            region=dest.region,
            endpoint_url=dest.endpoint_url,
            use_fips=dest.use_fips,
            sse_kms_key_id=dest.sse_kms_key_id,
            max_pool_connections=max(10, plan.upload_concurrency * 2),
            **sizes,
        )
    from migrator.stores.azure import AzureBlobStore

    assert dest.bucket is not None and dest.account_url is not None
    return AzureBlobStore(
        dest.bucket,
        dest.prefix or "",
        account_url=dest.account_url,
        max_concurrency=plan.upload_concurrency,
        **azure_credentials(plan, "destination", dest.connection_string_env, dest.account_key_env),
        **sizes,
    )


def open_key_provider(plan: Plan) -> KeyProvider:
    """The plan's KEK; with `keys.previous`, a chain that also unwraps with the earlier KEKs."""
    current = _kek(plan.keys)
    if not plan.keys.previous:
        return current
    previous = []
    for index, kek in enumerate(plan.keys.previous):
        try:
            previous.append(_kek(kek))
        except (KeyProviderError, ValueError) as exc:
            raise KeyProviderError(f"keys.previous[{index}]: {exc}") from None
    return KekChain(current, previous)


def _kek(keys: KekPlan) -> KeyProvider:
    if keys.provider == "local":
        assert keys.kek_file is not None
        return LocalKeyProvider(keys.kek_file)
    if keys.provider == "aws-kms":
        from migrator.keys.aws_kms import AwsKmsKeyProvider

        assert keys.key_id is not None
        return AwsKmsKeyProvider(keys.key_id, region=keys.region, endpoint_url=keys.endpoint_url)
    from migrator.keys.azure_keyvault import AzureKeyVaultKeyProvider

    assert keys.vault_url is not None and keys.key_name is not None
    return AzureKeyVaultKeyProvider(keys.vault_url, keys.key_name)


def state_url(plan: Plan) -> str:
    """MIGRATOR_STATE_URL, else the plan's state_url, else SQLite in the plan's state_dir."""
    return state_url_for(plan.state_dir, plan.state_url, STATE_FILE)


def describe_state(plan: Plan) -> str:
    """The state store as messages name it: its file, or its URL without a password."""
    url = state_url(plan)
    return str(sqlite_file(url)) if url.startswith("sqlite") else describe_url(url)


def open_state(plan: Plan) -> StateStore:
    """The plan's state store, migrated to this release's schema and bound to the plan."""
    state = StateStore(state_url(plan))
    try:
        state.claim_for_plan(plan.name)
    except BaseException:
        state.close()
        raise
    return state


def open_existing_state(plan: Plan) -> StateStore | None:
    """The plan's state store if a run or a rebuild made one (opened once), else None: readers
    such as verify work from the destination without one."""
    url = state_url(plan)
    if url.startswith("sqlite") and not sqlite_file(url).exists():
        return None
    state = StateStore(url)
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

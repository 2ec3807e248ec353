"""The source a dataset of the plan names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from migrator.errors import UsageError
from migrator.plan.model import (
    AzureSourcePlan,
    DatasetKind,
    DatasetPlan,
    LocalSourcePlan,
    S3SourcePlan,
)
from migrator.sources.base import FilteredSource, RestorableNames, Source
from migrator.sources.local import LocalSource

_NEEDS_BLOB = (
    "an Azure source needs the optional azure-storage-blob package: pip install 'migrator[azure]'"
)
_NEEDS_IDENTITY = (
    "an Azure source without connection_string_env or account_key_env signs in with the"
    " optional azure-identity package: pip install azure-identity"
)
# Where azure-identity signs in, by the account's DNS suffix; other hosts use the public cloud.
_AUTHORITY_BY_SUFFIX = {
    ".usgovcloudapi.net": "AZURE_GOVERNMENT",
    ".chinacloudapi.cn": "AZURE_CHINA",
}


def open_source(ds: DatasetPlan) -> Source:
    plan = ds.source
    inner: Source
    if isinstance(plan, LocalSourcePlan):
        inner = LocalSource(plan.path)
    elif isinstance(plan, S3SourcePlan):
        from migrator.sources.s3 import S3Source

        inner = S3Source(
            plan.bucket, plan.prefix, region=plan.region, endpoint_url=plan.endpoint_url
        )
    else:
        inner = _azure_source(ds.name, plan)
    filtered = FilteredSource(inner, ds.include)
    # Records files are read, never restored by name; objects are written back at their names.
    return RestorableNames(filtered, ds.name) if ds.kind is DatasetKind.OBJECTS else filtered


def _azure_source(dataset: str, plan: AzureSourcePlan) -> Source:
    with _installed_for(dataset):
        from migrator.sources.azure import AzureSource
    if plan.connection_string_env is not None:
        connection_string = _secret_from_env(
            dataset, "connection_string_env", plan.connection_string_env
        )
        return AzureSource(
            plan.bucket,
            plan.prefix,
            account_url=plan.account_url,
            connection_string=connection_string,
        )
    credential: Any
    if plan.account_key_env is not None:
        credential = _secret_from_env(dataset, "account_key_env", plan.account_key_env)
    else:
        credential = _default_credential(dataset, plan.account_url)
    return AzureSource(
        plan.bucket, plan.prefix, account_url=plan.account_url, credential=credential
    )


@contextmanager
def _installed_for(dataset: str, needs: str = _NEEDS_BLOB) -> Iterator[None]:
    """An optional package missing, said as what the dataset's source needs installed."""
    try:
        yield
    except ImportError as exc:
        raise UsageError(f"dataset {dataset}: {needs}") from exc


def _secret_from_env(dataset: str, field: str, name: str) -> str:
    """The value of the environment variable the plan names; messages name only the variable."""
    value = os.environ.get(name)
    if not value:
        raise UsageError(
            f"dataset {dataset}: source.{field} names the environment variable {name},"
            " which is not set (or empty)"
        )
    return value


def _default_credential(dataset: str, account_url: str) -> Any:
    with _installed_for(dataset, _NEEDS_IDENTITY):
        from azure.identity import AzureAuthorityHosts, DefaultAzureCredential
    host = urlsplit(account_url).hostname or ""
    for suffix, authority in _AUTHORITY_BY_SUFFIX.items():
        if host.endswith(suffix):
            return DefaultAzureCredential(authority=getattr(AzureAuthorityHosts, authority))
    return DefaultAzureCredential()

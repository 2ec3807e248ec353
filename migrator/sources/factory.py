"""The source a dataset of the plan names."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from migrator.errors import UsageError
from migrator.plan.model import DatasetPlan, SourcePlan
from migrator.sources.base import FilteredSource, RestorableNames, Source
from migrator.sources.local import LocalSource

# Where azure-identity signs in, by the account's DNS suffix; other hosts use the public cloud.
_AUTHORITY_BY_SUFFIX = {
    ".usgovcloudapi.net": "AZURE_GOVERNMENT",
    ".chinacloudapi.cn": "AZURE_CHINA",
}


def open_source(ds: DatasetPlan) -> Source:
    plan = ds.source
    inner: Source
    if plan.kind == "local":
        assert plan.path is not None  # the plan model requires it
        inner = LocalSource(plan.path)
    elif plan.kind == "s3":
        from migrator.sources.s3 import S3Source

        assert plan.bucket is not None  # the plan model requires it
        inner = S3Source(
            plan.bucket, plan.prefix, region=plan.region, endpoint_url=plan.endpoint_url
        )
    elif plan.kind == "azure":
        inner = _azure_source(ds.name, plan)
    else:
        raise UsageError(f"dataset {ds.name}: source kind {plan.kind!r} is not supported")
    filtered = FilteredSource(inner, ds.include)
    # Records files are read, never restored by name; objects are written back at their names.
    return RestorableNames(filtered, ds.name) if ds.kind == "objects" else filtered


def _azure_source(dataset: str, plan: SourcePlan) -> Source:
    assert plan.bucket is not None and plan.account_url is not None  # the plan model requires them
    try:
        from migrator.sources.azure import AzureSource
    except ImportError as exc:
        raise UsageError(
            f"dataset {dataset}: an Azure source needs the optional azure-storage-blob package:"
            " pip install 'migrator[azure]'"
        ) from exc
    if plan.connection_string_env is not None:
        connection_string = _secret_from_env(dataset, "connection_string_env", plan)
        return AzureSource(
            plan.bucket,
            plan.prefix,
            account_url=plan.account_url,
            connection_string=connection_string,
        )
    credential: Any
    if plan.account_key_env is not None:
        credential = _secret_from_env(dataset, "account_key_env", plan)
    else:
        credential = _default_credential(dataset, plan.account_url)
    return AzureSource(
        plan.bucket, plan.prefix, account_url=plan.account_url, credential=credential
    )


def _secret_from_env(dataset: str, field: str, plan: SourcePlan) -> str:
    """The value of the environment variable the plan names; messages name only the variable."""
    name = getattr(plan, field)
    value = os.environ.get(name)
    if not value:
        raise UsageError(
            f"dataset {dataset}: source.{field} names the environment variable {name},"
            " which is not set (or empty)"
        )
    return value


def _default_credential(dataset: str, account_url: str) -> Any:
    try:
        from azure.identity import AzureAuthorityHosts, DefaultAzureCredential
    except ImportError as exc:
        raise UsageError(
            f"dataset {dataset}: an Azure source without connection_string_env or"
            " account_key_env signs in with the optional azure-identity package:"
            " pip install azure-identity"
        ) from exc
    host = urlsplit(account_url).hostname or ""
    for suffix, authority in _AUTHORITY_BY_SUFFIX.items():
        if host.endswith(suffix):
            return DefaultAzureCredential(authority=getattr(AzureAuthorityHosts, authority))
    return DefaultAzureCredential()

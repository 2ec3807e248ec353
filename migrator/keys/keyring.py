"""Per-dataset data keys, kept wrapped at the destination so restore needs nothing local."""

from __future__ import annotations

from migrator.errors import MisplacedChunkError, MissingObjectError, WrongKeyError
from migrator.keys.datakey import DataKey
from migrator.keys.provider import KeyProvider, WrappedKey
from migrator.stores.base import ObjectStore


def data_key_object(dataset: str) -> str:
    return f"{dataset}/_keys/datakey.json"


def key_context(plan: str, dataset: str) -> dict[str, str]:
    """Bound into the wrap (and into KMS encryption context): a key cannot serve another dataset."""
    return {"migrator:plan": plan, "migrator:dataset": dataset}


def load_data_key(store: ObjectStore, provider: KeyProvider, plan: str, dataset: str) -> DataKey:
    """The dataset's existing data key; MissingObjectError if the dataset was never migrated."""
    key = data_key_object(dataset)
    wrapped = WrappedKey.from_json(store.get(key), object_key=key)
    if wrapped.context != key_context(plan, dataset):
        raise MisplacedChunkError(
            f"wrapped key belongs to {wrapped.context}, expected plan {plan!r} dataset {dataset!r}",
            object_key=key,
        )
    try:
        return provider.unwrap(wrapped)
    except WrongKeyError as exc:
        raise WrongKeyError(str(exc), object_key=key) from None


def load_or_create_data_key(
    store: ObjectStore, provider: KeyProvider, plan: str, dataset: str
) -> DataKey:
    """Reuse the dataset's key if the destination has one, else create and store it wrapped."""
    try:
        return load_data_key(store, provider, plan, dataset)
    except MissingObjectError:
        pass
    key, wrapped = provider.generate_data_key(key_context(plan, dataset))
    store.put(data_key_object(dataset), wrapped.to_json(), {"migrator-kind": "wrapped-key"})
    return key

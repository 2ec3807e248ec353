"""Keyring objects at the destination (docs/FORMAT.md §10): list, read, store and delete them.

The highest revision present is in force: a rotation stores the next revision before it deletes
the ones before, so a reader finds a readable keyring at every moment, listing again if one was
replaced between its listing and its read.
"""

from __future__ import annotations

from migrator.errors import MissingObjectError
from migrator.keys.keyring_doc import StoredKeyring, parse_keyring
from migrator.repository.names import data_key_object, keyring_object, keys_prefix, revision_of
from migrator.stores.base import ObjectStore


def list_key_objects(store: ObjectStore, dataset: str) -> tuple[int | None, list[str]]:
    """(the revision in force: the highest keyring revision, else 0 for datakey.json, else None;
    the key objects it supersedes: lower revisions, and datakey.json once a keyring exists)."""
    revisions: list[int] = []
    has_first = False  # datakey.json, revision 0
    for info in store.list(keys_prefix(dataset)):
        if info.key == data_key_object(dataset):
            has_first = True
        elif (revision := revision_of(info.key)) is not None:
            revisions.append(revision)
    if not revisions:
        return (0 if has_first else None), []
    revisions.sort()
    superseded = [data_key_object(dataset)] if has_first else []
    superseded += [keyring_object(dataset, r) for r in revisions[:-1]]
    return revisions[-1], superseded


def read_keyring(store: ObjectStore, plan: str, dataset: str) -> StoredKeyring:
    """The dataset's keyring in force, still wrapped and not yet checked for its signature;
    MissingObjectError if it has no data key (it was never migrated)."""
    revision, okey = _in_force(store, dataset)
    try:
        data = store.get(okey)
    except MissingObjectError:  # a rotation replaced it between the listing and the read
        revision, okey = _in_force(store, dataset)
        data = store.get(okey)
    return parse_keyring(data, plan, dataset, revision, okey)


def _in_force(store: ObjectStore, dataset: str) -> tuple[int, str]:
    """The revision in force and its object key, as listed now."""
    revision, _ = list_key_objects(store, dataset)
    if revision is None:
        raise MissingObjectError(
            "no data key: the dataset was never migrated", object_key=data_key_object(dataset)
        )
    okey = data_key_object(dataset) if revision == 0 else keyring_object(dataset, revision)
    return revision, okey


def put_keyring(store: ObjectStore, stored: StoredKeyring) -> None:
    """Store a signed keyring revision under its own name."""
    store.put(stored.object_key, stored.to_json(), {"migrator-kind": "keyring"})


def delete_key_object(store: ObjectStore, object_key: str) -> None:
    """Delete a key object: one a newer revision supersedes, or a revision that did not read
    back."""
    store.delete(object_key)

"""Per-dataset data keys, kept wrapped at the destination so restore needs nothing local.

A dataset starts with one data key, wrapped under the plan's KEK in `{dataset}/_keys/datakey.json`.
`migrator keys rotate` replaces that with a keyring, `{dataset}/_keys/keyring-NNNNNN.json`: every
data key the dataset ever used, each wrapped under the current KEK, and which one is current. A
rotation writes a new revision, then deletes the ones before it; the highest revision present is
in force, so a crash between the two leaves a readable keyring either way (docs/FORMAT.md §10).

Every chunk names its data key in its header, so readers pick the key chunk by chunk
(`Keyring.for_chunk`); new chunks are sealed under `sealing_key`: the current key, except that
a generation already under way finishes under the key it began with.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.codec.chunk import read_header
from migrator.codec.generation import generation_of_key, generations_prefix
from migrator.codec.manifest import MANIFEST_NAME
from migrator.errors import (
    FormatError,
    KeyProviderError,
    MisplacedChunkError,
    MissingObjectError,
    TamperedError,
    UnknownVersionError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey
from migrator.keys.kekchain import KekChain
from migrator.keys.provider import KeyProvider, WrappedKey
from migrator.stores.base import ObjectInfo, ObjectStore

KEYRING_FORMAT = "migrator/keyring"
KEYRING_VERSION = 1
INFO_KEYRING_MAC = b"migrator/v1/keyring-mac"
KEY_ID_METADATA = "migrator-key-id"  # set on every data chunk by the pipeline
_REVISION = re.compile(r"keyring-(\d{6,})\.json")
_HEX_KEY_ID = re.compile(r"[0-9a-f]{32}")
_PROBES = 8  # objects of an open generation looked at to find the key it began with


def keys_prefix(dataset: str) -> str:
    return f"{dataset}/_keys/"


def data_key_object(dataset: str) -> str:
    """The dataset's first (and until a rotation, only) data key, wrapped."""
    return f"{keys_prefix(dataset)}datakey.json"


def keyring_object(dataset: str, revision: int) -> str:
    return f"{keys_prefix(dataset)}keyring-{revision:06d}.json"


def revision_of(object_key: str) -> int | None:
    """The revision of a keyring object's key; None for any other key."""
    match = _REVISION.fullmatch(object_key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def key_context(plan: str, dataset: str) -> dict[str, str]:
    """Bound into the wrap (and into KMS encryption context): a key cannot serve another dataset."""
    return {"migrator:plan": plan, "migrator:dataset": dataset}


# --- the stored form ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredKeyring:
    """A dataset's data keys as stored: wrapped, oldest first, with the current one's id.

    Revision 0 is `datakey.json`, a dataset's single first key; revisions 1 and up are keyring
    objects. Nothing in it is secret.
    """

    plan: str
    dataset: str
    revision: int
    current: str  # key id (hex) of the data key new generations are sealed with
    keys: tuple[WrappedKey, ...]
    mac: str | None = None  # hex HMAC of the rest under the current key; None for revision 0

    @property
    def object_key(self) -> str:
        if self.revision == 0:
            return data_key_object(self.dataset)
        return keyring_object(self.dataset, self.revision)

    def body(self) -> dict[str, Any]:
        """Every field but `mac`; its canonical JSON is what the mac covers."""
        return {
            "format": KEYRING_FORMAT,
            "version": KEYRING_VERSION,
            "plan": self.plan,
            "dataset": self.dataset,
            "revision": self.revision,
            "current": self.current,
            "keys": [w.as_dict() for w in self.keys],
        }

    def to_json(self, current: DataKey) -> bytes:
        """The keyring object, sealed by a MAC under the current data key."""
        if self.revision < 1:
            raise ValueError("revision 0 is datakey.json: a single wrapped key, not a keyring")
        doc = self.body() | {"mac": _mac(current, self.body())}
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def _mac(current: DataKey, body: dict[str, Any]) -> str:
    """HMAC-SHA256 under a key derived from the current data key: without the data keys, no one
    can choose another current key or drop, add or reorder keys unnoticed."""
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO_KEYRING_MAC).derive(
        current.secret
    )
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(mac_key, canonical, hashlib.sha256).hexdigest()


def _parse_keyring(
    data: bytes, plan: str, dataset: str, revision: int, object_key: str
) -> StoredKeyring:
    """The keyring, checked for shape; its mac is checked once the keys are open."""

    def bad(message: str) -> NoReturn:
        raise TamperedError(f"keyring is malformed: {message}", object_key=object_key)

    try:
        doc: Any = orjson.loads(data)
    except ValueError as exc:
        bad(str(exc))
    if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
        bad(f"format is not {KEYRING_FORMAT!r}")
    if doc.get("version") != KEYRING_VERSION:
        raise UnknownVersionError(
            f"keyring version {doc.get('version')!r} is not supported (this build reads"
            f" {KEYRING_VERSION})",
            object_key=object_key,
        )
    fields = {"format", "version", "plan", "dataset", "revision", "current", "keys", "mac"}
    if set(doc) != fields:
        bad(f"fields are {sorted(doc)}, expected {sorted(fields)}")
    if (doc["plan"], doc["dataset"]) != (plan, dataset):
        raise MisplacedChunkError(
            f"keyring belongs to plan {doc['plan']!r} dataset {doc['dataset']!r}, expected"
            f" plan {plan!r} dataset {dataset!r}",
            object_key=object_key,
        )
    if doc["revision"] != revision or type(doc["revision"]) is not int:
        raise MisplacedChunkError(
            f"keyring says revision {doc['revision']!r}, its object name {revision}",
            object_key=object_key,
        )
    if not isinstance(doc["keys"], list) or not doc["keys"]:
        bad("keys is not a non-empty list")
    keys = tuple(WrappedKey.from_dict(k, object_key=object_key) for k in doc["keys"])
    ids = [w.key_id for w in keys]
    if len(set(ids)) != len(ids) or not all(_HEX_KEY_ID.fullmatch(i) for i in ids):
        bad("key ids are not distinct 32-digit hex fingerprints")
    if doc["current"] not in ids:
        bad(f"current key {doc['current']!r} is not one of its keys")
    if not isinstance(doc["mac"], str):
        bad("mac is not a string")
    return StoredKeyring(plan, dataset, revision, doc["current"], keys, doc["mac"])


def list_key_objects(store: ObjectStore, dataset: str) -> tuple[int | None, list[str]]:
    """(the revision in force: the highest keyring revision, else 0 for datakey.json, else None;
    the key objects it supersedes: lower revisions, and datakey.json once a keyring exists)."""
    revisions: list[int] = []
    legacy = False
    for info in store.list(keys_prefix(dataset)):
        if info.key == data_key_object(dataset):
            legacy = True
        elif (revision := revision_of(info.key)) is not None:
            revisions.append(revision)
    if not revisions:
        return (0 if legacy else None), []
    revisions.sort()
    superseded = [data_key_object(dataset)] if legacy else []
    superseded += [keyring_object(dataset, r) for r in revisions[:-1]]
    return revisions[-1], superseded


def read_keyring(store: ObjectStore, plan: str, dataset: str) -> StoredKeyring:
    """The dataset's keyring in force, still wrapped; MissingObjectError if it has no data key
    (it was never migrated)."""
    for attempt in range(2):
        revision, _ = list_key_objects(store, dataset)
        if revision is None:
            raise MissingObjectError(
                "no data key: the dataset was never migrated", object_key=data_key_object(dataset)
            )
        okey = data_key_object(dataset) if revision == 0 else keyring_object(dataset, revision)
        try:
            data = store.get(okey)
        except MissingObjectError:
            if attempt:
                raise
            continue  # a rotation replaced it between the listing and the read: list again
        if revision > 0:
            return _parse_keyring(data, plan, dataset, revision, okey)
        wrapped = WrappedKey.from_json(data, object_key=okey)
        return StoredKeyring(plan, dataset, 0, wrapped.key_id, (wrapped,))
    raise AssertionError("unreachable")


# --- the unwrapped form ------------------------------------------------------------------


class Keyring:
    """A dataset's data keys, unwrapped, by key id. Holds key material: never print or pickle
    it (its repr shows only key ids)."""

    __slots__ = ("_keys", "current", "dataset", "first")

    def __init__(self, dataset: str, keys: Sequence[DataKey], current: DataKey) -> None:
        if not keys or current not in keys:
            raise ValueError("a keyring holds its current key")
        self.dataset = dataset
        self.current = current  # new generations are sealed with it
        self.first = keys[0]  # the dataset's first data key
        self._keys = {k.key_id: k for k in keys}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return [k.hex() for k in self._keys]

    def get(self, key_id: bytes) -> DataKey | None:
        return self._keys.get(key_id)

    def for_chunk(self, data: bytes | memoryview, *, object_key: str | None = None) -> DataKey:
        """The key a stored chunk's header names. A header that cannot be read or names a key
        not in the keyring gets the current key: decoding it then reports what is wrong, in the
        order docs/FORMAT.md §3 gives (misplaced before wrong key)."""
        try:
            key_id = read_header(data, object_key=object_key).key_id
        except FormatError:
            return self.current
        return self._keys.get(key_id, self.current)

    def __repr__(self) -> str:
        return f"Keyring({self.dataset}, keys={self.key_ids}, current={self.current.key_id.hex()})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Keyring cannot be pickled: key material stays in process memory")


def key_for(keys: DataKey | Keyring, data: bytes | memoryview, object_key: str | None) -> DataKey:
    """The data key to open a stored chunk with: a single key as given, or the keyring's pick."""
    return keys if isinstance(keys, DataKey) else keys.for_chunk(data, object_key=object_key)


def open_keyring(stored: StoredKeyring, provider: KeyProvider) -> tuple[Keyring, list[int]]:
    """Unwrap every data key with whichever KEK of the plan wrapped it: the keyring, and for
    each key which KEK opened it (0 the current one, i + 1 keys.previous[i])."""
    chain = KekChain.of(provider)
    okey = stored.object_key
    where = f"dataset {stored.dataset}"
    keys: list[DataKey] = []
    openers: list[int] = []
    for wrapped in stored.keys:
        if wrapped.context != key_context(stored.plan, stored.dataset):
            raise MisplacedChunkError(
                f"wrapped key belongs to {wrapped.context}, expected plan {stored.plan!r}"
                f" dataset {stored.dataset!r}",
                object_key=okey,
            )
        try:
            key, opener = chain.unwrap_with(wrapped)
        except WrongKeyError as exc:
            raise WrongKeyError(f"{where}: {exc}", object_key=okey) from None
        except KeyProviderError as exc:
            raise KeyProviderError(f"{okey}: {where}: {exc}") from None
        keys.append(key)
        openers.append(opener)
    current = next(k for k in keys if k.key_id.hex() == stored.current)
    sealed = stored.revision == 0 or (
        stored.mac is not None and hmac.compare_digest(stored.mac, _mac(current, stored.body()))
    )
    if not sealed:
        raise TamperedError(
            "keyring was altered: its MAC does not match its keys and current key",
            object_key=okey,
        )
    return Keyring(stored.dataset, keys, current), openers


def load_keyring(store: ObjectStore, provider: KeyProvider, plan: str, dataset: str) -> Keyring:
    """Every data key of the dataset, unwrapped; MissingObjectError if it was never migrated."""
    return open_keyring(read_keyring(store, plan, dataset), provider)[0]


def load_data_key(store: ObjectStore, provider: KeyProvider, plan: str, dataset: str) -> DataKey:
    """The dataset's current data key; MissingObjectError if the dataset was never migrated."""
    return load_keyring(store, provider, plan, dataset).current


def load_or_create_data_key(
    store: ObjectStore, provider: KeyProvider, plan: str, dataset: str
) -> DataKey:
    """The key new chunks of the dataset are sealed with (`sealing_key`); a dataset without
    one gets its first data key, stored wrapped."""
    return sealing_key(store, load_or_create_keyring(store, provider, plan, dataset), dataset)


def load_or_create_keyring(
    store: ObjectStore, provider: KeyProvider, plan: str, dataset: str
) -> Keyring:
    """The dataset's keyring; a dataset without one gets its first data key, stored wrapped."""
    try:
        return load_keyring(store, provider, plan, dataset)
    except MissingObjectError:
        key, wrapped = provider.generate_data_key(key_context(plan, dataset))
        store.put(data_key_object(dataset), wrapped.to_json(), {"migrator-kind": "wrapped-key"})
        return Keyring(dataset, [key], key)


# --- which key seals ---------------------------------------------------------------------


def open_generation_key(
    store: ObjectStore, keyring: Keyring, dataset: str, records: Sequence[int] | None = None
) -> tuple[int, DataKey] | None:
    """(generation, key) of a generation under way that began under a key of the keyring: the
    generation after the newest generation record, if objects are stored under it. `records`:
    the generations with a record, when the caller has listed them already."""
    if records is None:
        listed = (generation_of_key(o.key) for o in store.list(generations_prefix(dataset)))
        records = [g for g in listed if g is not None]
    generation = max(records, default=0) + 1
    for n, info in enumerate(store.list(f"{dataset}/g{generation:06d}/")):
        if n >= _PROBES:
            break
        key = _sealed_with(store, keyring, info)
        if key is not None:
            return generation, key
    return None


def sealing_key(store: ObjectStore, keyring: Keyring, dataset: str) -> DataKey:
    """The current key, except that a generation under way finishes under the key it began
    with: resumed, its shards never mix two keys (nor two name tags of one object)."""
    if len(keyring) == 1:
        return keyring.current
    under_way = open_generation_key(store, keyring, dataset)
    return under_way[1] if under_way is not None else keyring.current


def _sealed_with(store: ObjectStore, keyring: Keyring, info: ObjectInfo) -> DataKey | None:
    """The keyring's key a stored chunk was sealed with: from its metadata, else its header."""
    recorded = info.metadata.get(KEY_ID_METADATA)
    if recorded is None and not info.key.endswith(f"/{MANIFEST_NAME}"):
        head = store.head(info.key)
        recorded = head.metadata.get(KEY_ID_METADATA) if head is not None else None
    if recorded is not None and _HEX_KEY_ID.fullmatch(recorded):
        return keyring.get(bytes.fromhex(recorded))
    try:  # a manifest (small), or an object stored without the pipeline's metadata
        return keyring.get(read_header(store.get(info.key), object_key=info.key).key_id)
    except FormatError:
        return None

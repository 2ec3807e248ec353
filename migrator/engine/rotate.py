"""`migrator keys rotate`: re-wrap every data key under the plan's current KEK; nothing is
re-encrypted.

Per dataset: read the keyring in force, unwrap each data key with whichever KEK of the plan
(`keys`, `keys.previous`) wrapped it, wrap those the current KEK did not under it, optionally add
a fresh data key and make it current, and store the result as the next keyring revision. The new
revision is read back and opened with the current KEK alone before the revisions it supersedes
(and `datakey.json`) are deleted. A crash at any point leaves the old revision or the new one in
force, both readable; a rerun finishes the deletions and otherwise changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.codec.chunk import read_header
from migrator.codec.generation import generation_key
from migrator.engine.chain import record_generations
from migrator.errors import MigratorError, MissingObjectError
from migrator.keys.datakey import DataKey
from migrator.keys.kekchain import KekChain
from migrator.keys.keyring import (
    Keyring,
    StoredKeyring,
    key_context,
    keyring_object,
    list_key_objects,
    open_generation_key,
    open_keyring,
    read_keyring,
)
from migrator.keys.provider import KeyProvider
from migrator.plan.model import Plan
from migrator.stores.base import ObjectStore


class RotationError(MigratorError):
    """The keyring just written did not read back; it was removed, the old one is in force."""


@dataclass
class DatasetRotation:
    dataset: str
    keys: int = 0  # data keys in the keyring in force afterwards (0: the dataset has none yet)
    rewrapped: int = 0  # data keys this rotation re-wrapped under the current KEK
    revision: int | None = None  # keyring revision in force afterwards; 0: datakey.json
    written: str | None = None  # the keyring object this rotation wrote
    removed: list[str] = field(default_factory=list)  # superseded key objects deleted
    new_key: str | None = None  # id of the data key --new-data-key added and made current
    current: str | None = None  # id of the current data key
    open_generation: int | None = None  # under way: it finishes under the key it began with
    open_generation_key: str | None = None
    kept_unused: bool = False  # --new-data-key kept a current key that has sealed nothing yet

    @property
    def changed(self) -> bool:
        return self.written is not None or bool(self.removed)


class KeyRotation:
    def __init__(self, plan: Plan, store: ObjectStore, provider: KeyProvider) -> None:
        self.plan = plan
        self.store = store
        self.chain = KekChain.of(provider)

    def rotate(
        self, only: set[str] | None = None, *, new_data_key: bool = False
    ) -> list[DatasetRotation]:
        """Every dataset (or `only` these), in plan order; the first failure stops, and a
        rerun goes on from there (datasets already rotated are left as they are)."""
        return [
            self._dataset(ds.name, new_data_key)
            for ds in self.plan.datasets
            if not only or ds.name in only
        ]

    def _dataset(self, dataset: str, new_data_key: bool) -> DatasetRotation:
        result = DatasetRotation(dataset)
        try:
            stored = read_keyring(self.store, self.plan.name, dataset)
        except MissingObjectError:
            return result  # no data key yet: the first run creates one under the current KEK
        keyring, openers = open_keyring(stored, self.chain)
        keys = [k for w in stored.keys if (k := keyring.get(bytes.fromhex(w.key_id)))]
        result.keys, result.revision = len(stored.keys), stored.revision
        result.current = stored.current
        gens = record_generations(self.store, dataset)  # listed once, for both questions
        under_way = open_generation_key(self.store, keyring, dataset, gens)
        if under_way is not None:
            result.open_generation = under_way[0]
            result.open_generation_key = under_way[1].key_id.hex()
        add = False
        if new_data_key:
            current_opener = openers[[w.key_id for w in stored.keys].index(stored.current)]
            result.kept_unused = current_opener == 0 and self._unused(keyring, under_way, gens)
            add = not result.kept_unused
        if any(opener != 0 for opener in openers) or add:
            self._write(stored, keys, openers, add, result)
        _, superseded = list_key_objects(self.store, dataset)
        for okey in superseded:
            self.store.delete(okey)
            result.removed.append(okey)
        return result

    def _unused(
        self, keyring: Keyring, under_way: tuple[int, DataKey] | None, gens: list[int]
    ) -> bool:
        """The current key (already under the current KEK) was added by an earlier
        `--new-data-key` (it is not the dataset's first) and has sealed nothing yet: neither the
        newest generation record (of `gens`, the dataset's, oldest first) nor a generation
        under way. Another fresh key would add nothing, so rerunning the command after an
        interruption converges."""
        current = keyring.current
        if current == keyring.first or (under_way is not None and under_way[1] == current):
            return False
        if not gens:
            return True
        newest = self.store.get(generation_key(keyring.dataset, gens[-1]))
        return read_header(newest).key_id != current.key_id

    def _write(
        self,
        stored: StoredKeyring,
        keys: list[DataKey],
        openers: list[int],
        add: bool,
        result: DatasetRotation,
    ) -> None:
        context = key_context(self.plan.name, stored.dataset)
        wrapped = []
        for old, key, opener in zip(stored.keys, keys, openers, strict=True):
            if opener == 0:
                wrapped.append(old)  # already under the current KEK
            else:
                wrapped.append(self.chain.current.wrap(key, context))
                result.rewrapped += 1
        current = next(k for k in keys if k.key_id.hex() == stored.current)
        if add:
            current, fresh = self.chain.current.generate_data_key(context)
            keys.append(current)
            wrapped.append(fresh)
            result.new_key = current.key_id.hex()
        new = StoredKeyring(
            stored.plan,
            stored.dataset,
            stored.revision + 1,  # the revision in force, as read_keyring listed it
            current.key_id.hex(),
            tuple(wrapped),
        )
        okey = keyring_object(stored.dataset, new.revision)
        self.store.put(okey, new.to_json(current), {"migrator-kind": "keyring"})
        self._check_written(new, keys)
        result.written = okey
        result.keys, result.revision, result.current = len(keys), new.revision, new.current

    def _check_written(self, new: StoredKeyring, keys: list[DataKey]) -> None:
        """The revision just stored is the one in force and the current KEK alone opens every
        key in it; else it is deleted, so the revision before stays in force."""
        try:
            back = read_keyring(self.store, self.plan.name, new.dataset)
            if back.revision != new.revision:
                raise RotationError(
                    f"{new.object_key}: another keyring revision ({back.revision}) appeared"
                    " beside it: is another rotation running?"
                )
            keyring, _ = open_keyring(back, KekChain(self.chain.current))
            if sorted(keyring.key_ids) != sorted(k.key_id.hex() for k in keys):
                raise RotationError(f"{new.object_key}: read back with other keys than written")
        except MigratorError as exc:
            self.store.delete(new.object_key)
            if isinstance(exc, RotationError):
                raise
            raise RotationError(
                f"dataset {new.dataset}: the new keyring did not read back ({exc}); it was"
                " removed and the keyring before it is still in force"
            ) from None

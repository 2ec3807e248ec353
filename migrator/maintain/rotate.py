"""`migrator keys rotate`: re-wrap every data key under the plan's current KEK and re-sign the
keyring with the plan's current signing key; nothing is re-encrypted.

Per dataset: read the keyring in force and check its signature (a signing key of `keys` or
`keys.previous`), unwrap each data key with whichever KEK of the plan wrapped it, wrap those the
current KEK did not under it, optionally add a fresh data key that seals the generations after
the newest one begun, and store the result, signed, as the next keyring revision. The new
revision is read back and opened with the current KEK and signing key alone before the
revisions it supersedes (and `datakey.json`) are deleted. A crash at any point leaves the old
revision or the new one in force, both readable; a rerun finishes the deletions and otherwise
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.errors import MigratorError, MissingObjectError
from migrator.keys.datakey import DataKey
from migrator.keys.kekchain import KekChain
from migrator.keys.keyring import Keyring, key_context, open_keyring
from migrator.keys.keyring_doc import StoredKeyring
from migrator.keys.provider import KeyProvider
from migrator.keys.signing import AnyOf
from migrator.plan.model import Plan
from migrator.repository.generations import load_record, record_generations
from migrator.repository.keyrings import (
    delete_key_object,
    list_key_objects,
    put_keyring,
    read_keyring,
)
from migrator.repository.segments import list_segments, open_stored_segment
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
    new_key_from: int | None = None  # the first generation the new key seals
    current: str | None = None  # id of the current data key
    open_generation: int | None = None  # under way: it finishes under the key it began with
    open_generation_key: str | None = None
    kept_unused: bool = False  # --new-data-key kept a current key that has sealed nothing yet
    signed_by: str | None = None  # signing key of the keyring in force afterwards
    resigned: bool = False  # this rotation moved the keyring to the plan's current signing key

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
        keyring, openers = open_keyring(stored, self.chain)  # vouched for by a plan's signer
        keys = [k for w in stored.keys if (k := keyring.get(bytes.fromhex(w.key_id)))]
        result.keys, result.revision = len(stored.keys), stored.revision
        result.current, result.signed_by = stored.current, stored.signed_by
        signing_key = self.chain.signer.public_key().key_id
        result.resigned = stored.signed_by != signing_key
        add_from: int | None = None
        if new_data_key:
            begun, under_way = self._begun(keyring)
            if under_way:
                result.open_generation = begun
                result.open_generation_key = keyring.sealing_key(begun).key_id.hex()
            current_opener = openers[[w.key_id for w in stored.keys].index(stored.current)]
            starts = keyring.sealing_from(keyring.current) or 1
            # Added by an earlier --new-data-key and sealed nothing yet: a rerun adds no other.
            result.kept_unused = (
                current_opener == 0 and keyring.current != keyring.first and starts > begun
            )
            if not result.kept_unused:
                add_from = begun + 1
        if any(opener != 0 for opener in openers) or add_from is not None or result.resigned:
            self._write(stored, keys, openers, add_from, result)
        _, superseded = list_key_objects(self.store, dataset)
        for okey in superseded:
            delete_key_object(self.store, okey)
            result.removed.append(okey)
        return result

    def _begun(self, keyring: Keyring) -> tuple[int, bool]:
        """(the newest generation anything was sealed in, whether it is still under way), from
        authenticated data only: the newest generation record, opened with the data keys, and
        the generations the shards' signed ledgers name. Object metadata, and objects stored
        but never recorded, are anyone's to write and decide nothing."""
        dataset = keyring.dataset
        records = record_generations(self.store, dataset)
        newest = 0
        if records:
            load_record(self.store, self.plan.name, dataset, records[-1], keyring)
            newest = records[-1]
        trust = AnyOf([self.chain.trust(), keyring.signers])
        in_ledger = 0
        for shard, numbered in list_segments(self.store, dataset)[0].items():
            number, okey = numbered[-1]
            segment = open_stored_segment(
                self.store,
                okey,
                plan=self.plan.name,
                dataset=dataset,
                shard=shard,
                segment=number,
                verifier=trust,
            )
            in_ledger = max([in_ledger, *(e.generation for e in segment.entries)])
        return max(newest, in_ledger), in_ledger > newest

    def _write(
        self,
        stored: StoredKeyring,
        keys: list[DataKey],
        openers: list[int],
        add_from: int | None,
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
        sealing = list(stored.sealing)
        if add_from is not None:
            current, fresh = self.chain.current.generate_data_key(context)
            keys.append(current)
            wrapped.append(fresh)
            if sealing[-1][0] >= add_from:  # the key it replaces never sealed anything
                sealing.pop()
            sealing.append((add_from, current.key_id.hex()))
            result.new_key, result.new_key_from = current.key_id.hex(), add_from
        new = StoredKeyring(
            stored.plan,
            stored.dataset,
            stored.revision + 1,  # the revision in force, as read_keyring listed it
            tuple(wrapped),
            tuple(sealing),
            stored.signers,
        ).signed(self.chain.signer)
        put_keyring(self.store, new)
        self._check_written(new, keys)
        result.written = new.object_key
        result.keys, result.revision, result.current = len(keys), new.revision, new.current
        result.signed_by = new.signed_by

    def _check_written(self, new: StoredKeyring, keys: list[DataKey]) -> None:
        """The revision just stored is the one in force and the current KEK and signing key
        alone open it; else it is deleted, so the revision before stays in force."""
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
            delete_key_object(self.store, new.object_key)
            if isinstance(exc, RotationError):
                raise
            raise RotationError(
                f"dataset {new.dataset}: the new keyring did not read back ({exc}); it was"
                " removed and the keyring before it is still in force"
            ) from None

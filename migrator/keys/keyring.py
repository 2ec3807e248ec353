"""Per-dataset data keys, kept wrapped at the destination so restore needs nothing local.

A dataset starts with one data key, in a keyring of that one key: `{dataset}/_keys/datakey.json`
(revision 0). `migrator keys rotate` writes the next revision,
`{dataset}/_keys/keyring-NNNNNN.json`, then deletes the ones before it; the highest revision
present is in force, so a crash between the two leaves a readable keyring either way
(docs/FORMAT.md §10). Every revision is signed by
the plan's signing key (keyring_doc.py), and a keyring that signature does not vouch for is
refused, by readers and writers alike.

Every chunk names its data key in its header, so readers pick the key chunk by chunk
(`Keyring.for_chunk`); the keyring says which key seals each generation
(`Keyring.sealing_key`): the current key from the generation a rotation chose, the key before
it for the generations before, a generation under way at the rotation included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from migrator.codec.chunk import read_header
from migrator.errors import (
    FormatError,
    KeyProviderError,
    MisplacedChunkError,
    MissingObjectError,
    WrongKeyError,
)
from migrator.keys.datakey import DataKey
from migrator.keys.kekchain import KekChain
from migrator.keys.keyring_doc import StoredKeyring, first_keyring
from migrator.keys.provider import KeyProvider
from migrator.keys.signing import AnyOf, SignatureVerifier, TrustedKeys
from migrator.repository.keyrings import put_keyring, read_keyring
from migrator.repository.names import keys_prefix
from migrator.stores.base import ObjectStore

__all__ = [
    "KEY_ID_METADATA",
    "Keyring",
    "StoredKeyring",
    "check_signer_recorded",
    "key_context",
    "key_for",
    "ledger_trust",
    "load_data_key",
    "load_keyring",
    "load_or_create_keyring",
    "open_keyring",
    "plan_trust",
]

# Set on every data chunk by the pipeline, for people and for `verify --quick`; never used to
# choose a key (anyone who can write the destination can set it).
KEY_ID_METADATA = "migrator-key-id"


def key_context(plan: str, dataset: str) -> dict[str, str]:
    """Bound into the wrap (and into KMS encryption context): a key cannot serve another dataset."""
    return {"migrator:plan": plan, "migrator:dataset": dataset}


# --- the unwrapped form ------------------------------------------------------------------


class Keyring:
    """A dataset's data keys, unwrapped, by key id; which of them seals which generation; and
    the signing keys its keyring lists (the ledger's). Holds key material: never print or
    pickle it (its repr shows only key ids)."""

    __slots__ = ("_keys", "_sealing", "current", "dataset", "first", "signers")

    def __init__(
        self,
        dataset: str,
        keys: Sequence[DataKey],
        sealing: Sequence[tuple[int, DataKey]],
        signers: TrustedKeys | None = None,
    ) -> None:
        if not keys or not sealing or any(k not in keys for _, k in sealing):
            raise ValueError("a keyring holds the keys that seal")
        self.dataset = dataset
        self._sealing = tuple(sealing)
        self.current = sealing[-1][1]  # new generations are sealed with it
        self.first = keys[0]  # the dataset's first data key
        self._keys = {k.key_id: k for k in keys}
        self.signers = signers or TrustedKeys(())

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return [k.hex() for k in self._keys]

    def get(self, key_id: bytes) -> DataKey | None:
        return self._keys.get(key_id)

    def sealing_key(self, generation: int) -> DataKey:
        """The key that seals `generation`, as the signed keyring says: every shard of a
        generation, resumed or not, under one key (and one name tag per object)."""
        key = self._sealing[0][1]
        for first, candidate in self._sealing:
            if first > generation:
                break
            key = candidate
        return key

    def sealing_from(self, key: DataKey) -> int | None:
        """The first generation `key` seals, as the current key; None if it never did."""
        starts = [first for first, k in self._sealing if k == key]
        return starts[-1] if starts else None

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


def plan_trust(provider: KeyProvider) -> AnyOf:
    """The signing keys the plan trusts: its KEK's and each earlier KEK's (keys.previous)."""
    return KekChain.of(provider).trust()


def ledger_trust(keyring: Keyring, provider: KeyProvider) -> AnyOf:
    """The signing keys a dataset's ledger segments verify with: the plan's, and every earlier
    one its (verified) keyring lists."""
    return AnyOf([plan_trust(provider), keyring.signers])


def open_keyring(
    stored: StoredKeyring, provider: KeyProvider, trust: SignatureVerifier | None = None
) -> tuple[Keyring, list[int]]:
    """Unwrap every data key with whichever KEK of the plan wrapped it, then check the keyring's
    signature with a signing key the plan trusts (`trust`, by default `plan_trust`): the
    keyring, and for each key which KEK opened it (0 the current one, i + 1 keys.previous[i]).
    A keyring the signature does not vouch for is an UntrustedKeyError naming it."""
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
    try:
        signers = stored.trusted_signers(trust or chain.trust())
    except KeyProviderError as exc:  # the signing key's service could not be asked
        raise KeyProviderError(f"{okey}: {where}: {exc}") from None
    by_id = {k.key_id.hex(): k for k in keys}
    sealing = [(first, by_id[key_id]) for first, key_id in stored.sealing]
    return Keyring(stored.dataset, keys, sealing, signers), openers


def load_keyring(store: ObjectStore, provider: KeyProvider, plan: str, dataset: str) -> Keyring:
    """Every data key of the dataset, unwrapped and vouched for by the plan's signing key;
    MissingObjectError if it was never migrated."""
    return open_keyring(read_keyring(store, plan, dataset), provider)[0]


def load_data_key(store: ObjectStore, provider: KeyProvider, plan: str, dataset: str) -> DataKey:
    """The dataset's current data key; MissingObjectError if the dataset was never migrated."""
    return load_keyring(store, provider, plan, dataset).current


def load_or_create_keyring(
    store: ObjectStore, provider: KeyProvider, plan: str, dataset: str
) -> Keyring:
    """The dataset's keyring, for a writer; a dataset without one gets its first data key, in
    a keyring signed by the plan's signing key. A writer signs its ledger with that key, so
    the keyring must list it (`check_signer_recorded`)."""
    try:
        keyring = load_keyring(store, provider, plan, dataset)
    except MissingObjectError:
        key, wrapped = provider.generate_data_key(key_context(plan, dataset))
        stored = first_keyring(plan, dataset, wrapped).signed(provider.signer)
        put_keyring(store, stored)
        return Keyring(dataset, [key], [(1, key)], TrustedKeys(stored.signers))
    check_signer_recorded(keyring, provider)
    return keyring


def check_signer_recorded(keyring: Keyring, provider: KeyProvider) -> None:
    """The plan's signing key is one the keyring lists, so whoever later audits with the keyring
    finds every key the ledger was signed with; a signing key new to the plan is recorded by
    `migrator keys rotate`, as a new KEK is."""
    public = provider.signer.public_key()
    if keyring.signers.public_key_for(public.key_id) is None:
        raise KeyProviderError(
            f"{keys_prefix(keyring.dataset)}: dataset {keyring.dataset}: the plan's signing key"
            f" {public.key_id} ({provider.signer.describe()}) is not yet recorded in the"
            f" dataset's keyring (it lists {keyring.signers.describe()}); run `migrator keys"
            " rotate` to record it, keeping the earlier KEK and its signing key in"
            " keys.previous until then"
        )

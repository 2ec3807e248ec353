"""Names and digests in the state store, sealed as the destination keeps them.

The destination shows object names only as keyed tags and plaintext digests only inside sealed
manifests (FORMAT.md §8). The state store is an index of the destination: it holds the same
values (source object names, xxh3-128 of plaintext, a shard's digest, inventories of names and
record digests, the routing's listing digest and CSV header), so it keeps them sealed too, under
a key derived from the dataset's first data key (the one every keyring keeps first, so key
rotations never change it): whoever reads the database or a copy of it learns no more than
whoever lists the destination.

AES-SIV (RFC 5297) with the dataset and the column as associated data: deterministic, so an
equal value seals equally (as a keyed tag would: lookups and grouping still work) and can be
opened again (a manifest needs the name and digest back). A value sealed for one dataset or
column does not open as another's.

Values an older release stored in plain are sealed in place the first time the dataset's key
is bound (`seal_legacy_rows`); a sealed value is recognised by its prefix, so reading never
confuses the two.
"""

from __future__ import annotations

import base64
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Table, select, update

from migrator.errors import StateError
from migrator.keys.datakey import DataKey
from migrator.repository.names import dataset_prefix
from migrator.state.schema import chunks, routes, shard_maps, shards, uploads

INFO_STATE_KEY = b"migrator/v1/state-values"
TEXT_PREFIX = "s1:"  # a sealed text value; hex digests and object names never begin so...
BLOB_PREFIX = b"MGS1"  # ...and a sealed binary value, whose plain forms never do either
_LEGACY_DONE = "sealed-values:"  # meta key (with the dataset): its plain rows are sealed
UPLOAD_DIGEST = "upload_plain_xxh3"  # the column name the uploads journal's digest seals with

# (table, the column sealed, whether it holds bytes, the dataset's rows)
_SEALED_COLUMNS: tuple[tuple[Table, str, bool], ...] = (
    (chunks, "name", False),
    (chunks, "plain_xxh3", False),
    (shards, "digest", False),
    (shard_maps, "blob", True),
    (routes, "inventory_digest", False),
    (routes, "csv_header", True),
)


class StateSealer:
    """Seals and opens one dataset's values. Holds a secret: never print or pickle it."""

    __slots__ = ("_siv", "dataset")

    def __init__(self, dataset: str, first: DataKey) -> None:
        self.dataset = dataset
        secret = HKDF(hashes.SHA256(), 64, None, INFO_STATE_KEY).derive(first.secret)
        self._siv = AESSIV(secret)

    def __repr__(self) -> str:
        return f"StateSealer({self.dataset})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("StateSealer cannot be pickled: key material stays in process memory")

    def _ad(self, column: str) -> list[bytes]:
        return [self.dataset.encode(), column.encode()]

    def seal_text(self, column: str, value: str) -> str:
        sealed = self._siv.encrypt(value.encode("utf-8", "surrogateescape"), self._ad(column))
        return TEXT_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open_text(self, column: str, value: str) -> str:
        if not value.startswith(TEXT_PREFIX):
            return value  # stored before values were sealed
        body = value[len(TEXT_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._siv.decrypt(raw, self._ad(column)).decode("utf-8", "surrogateescape")
        except (ValueError, InvalidTag):
            raise self._unreadable(column) from None

    def seal_bytes(self, column: str, value: bytes) -> bytes:
        return BLOB_PREFIX + self._siv.encrypt(value, self._ad(column))

    def open_bytes(self, column: str, value: bytes) -> bytes:
        if not value.startswith(BLOB_PREFIX):
            return value
        try:
            return self._siv.decrypt(value[len(BLOB_PREFIX) :], self._ad(column))
        except InvalidTag:
            raise self._unreadable(column) from None

    def _unreadable(self, column: str) -> StateError:
        return StateError(
            f"dataset {self.dataset}: a sealed {column} in the state store does not open under"
            " the dataset's key (another plan's state, or damaged); rebuild the state with"
            " `migrator state rebuild`"
        )


def is_sealed(value: str | bytes | None) -> bool:
    if isinstance(value, str):
        return value.startswith(TEXT_PREFIX)
    return value is not None and value.startswith(BLOB_PREFIX)


def no_key(dataset: str, what: str) -> StateError:
    """Reading a sealed value, or writing one, before the dataset's key was bound."""
    return StateError(
        f"dataset {dataset}: the state store keeps {what} sealed under the dataset's key, which"
        " this command has not loaded"
    )


def legacy_marker(dataset: str) -> str:
    """The meta key saying the dataset's plain rows of an older release are sealed."""
    return _LEGACY_DONE + dataset


def seal_legacy_rows(conn: Connection, sealer: StateSealer) -> None:
    """Inside one transaction: seal the values of the dataset an older release stored in plain
    (each row once: a sealed value is left as it is). Idempotent, and deterministic, so workers
    doing it at once write the same bytes. The caller notes it done (legacy_marker)."""
    dataset = sealer.dataset
    for table, column, binary in _SEALED_COLUMNS:
        col = table.c[column]
        keys = [c for c in table.primary_key.columns]
        rows = conn.execute(
            select(*keys, col).where(table.c.dataset == dataset, col.is_not(None))
        ).fetchall()
        for row in rows:
            value = row[-1]
            if is_sealed(bytes(value) if binary else value):
                continue
            sealed = (
                sealer.seal_bytes(column, bytes(value))
                if binary
                else sealer.seal_text(column, value)
            )
            where = [k == row[i] for i, k in enumerate(keys)]
            conn.execute(update(table).where(*where).values({column: sealed}))
    prefix = dataset_prefix(dataset)
    for object_key, digest in conn.execute(
        select(uploads.c.object_key, uploads.c.plain_xxh3).where(
            uploads.c.object_key.startswith(prefix, autoescape=True)
        )
    ).fetchall():
        if not is_sealed(bytes(digest)):
            conn.execute(
                update(uploads)
                .where(uploads.c.object_key == object_key)
                .values(plain_xxh3=sealer.seal_bytes(UPLOAD_DIGEST, bytes(digest)))
            )


class DatasetSealers:
    """The sealers of the datasets whose key this store has bound, shared by every table: a
    value is sealed or opened only under its own dataset's key."""

    def __init__(self) -> None:
        self._by_dataset: dict[str, StateSealer] = {}

    def bind(self, sealer: StateSealer) -> None:
        self._by_dataset[sealer.dataset] = sealer

    def bound(self, dataset: str) -> StateSealer | None:
        return self._by_dataset.get(dataset)

    def require(self, dataset: str, what: str) -> StateSealer:
        """The dataset's sealer, to seal or open `what`; refused when its key is not bound."""
        sealer = self._by_dataset.get(dataset)
        if sealer is None:
            raise no_key(dataset, what)
        return sealer

    def open_text(self, dataset: str, column: str, value: str) -> str:
        """A stored text value, opened if sealed (an older release stored it plain)."""
        if not is_sealed(value):
            return value
        return self.require(dataset, column).open_text(column, value)

    def open_bytes(self, dataset: str, column: str, value: bytes) -> bytes:
        if not is_sealed(value):
            return value
        return self.require(dataset, column).open_bytes(column, value)

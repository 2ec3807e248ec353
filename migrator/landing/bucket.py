"""Objects landed in a bucket or container: each whole at its name, with the source's version
and size as metadata, so the landed copy's digest is read back from the store itself.

An object goes up in one put when it fits one part, else as a multipart upload of its
decrypted parts, re-cut to the landing part size as they stream: never whole in memory (a
store without multipart uploads, a local folder, is given each object whole).
Metadata on every landed object:
  migrator-version, migrator-size  the source's version and size (what object digests hash)
  migrator-generation              the generation that landed it
  migrator-xxh3                    xxh3-128 (hex) of the plaintext when the archive holds the
                                   object in one part; else of its parts' 16-byte digests, in
                                   order, and migrator-xxh3-parts says "<parts>x<part bytes>"
Both come from the manifest's part digests, so a multipart upload carries its metadata from
its first request (S3 fixes metadata there; changing it later is a copy, refused over 5 GiB).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import xxhash

from migrator.codec.digests import add, object_digest
from migrator.errors import LandingError, MigratorError, UnsupportedOperationError
from migrator.landing.target import LandedContent, LandedObject, ObjectsGeneration
from migrator.objectnames import NAMED_AT_MOST, Refusals, name_problem, shown
from migrator.read.readback import ordered_map
from migrator.sharding import shard_of
from migrator.sizes import MiB
from migrator.stores.base import Buffer, MultipartStore, ObjectInfo, ObjectStore

META_VERSION = "migrator-version"
META_SIZE = "migrator-size"
META_GENERATION = "migrator-generation"
META_XXH3 = "migrator-xxh3"
META_XXH3_PARTS = "migrator-xxh3-parts"

LAND_WORKERS = 4  # objects landed at once: each with its part and those read ahead of it
HEAD_WORKERS = 16  # HEAD requests at once when reading the landed content back
MAX_PARTS = 10_000  # S3's limit of parts an upload (Azure allows 50,000 blocks)
MAX_KEY_BYTES = 1024  # S3's key limit in UTF-8 bytes; Azure's is 1,024 characters
MAX_AZURE_SEGMENTS = 254  # path segments of an Azure blob name


class BucketObjects:
    """An objects dataset landed under a store (its prefix, SSE-KMS or encryption scope and
    checksums set by whoever opened it). `shards`: the dataset's shard count, which a base
    that replaces needs to tell this shard's names from the others'."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        dataset: str,
        part_size: int,
        shards: int | None = None,
        workers: int = LAND_WORKERS,
    ) -> None:
        if part_size < 1:
            raise ValueError(f"part_size must be positive, not {part_size}")
        self.store = store
        self.dataset = dataset
        self.part_size = part_size
        self.shards = shards
        self.workers = workers

    def describe(self) -> str:
        return f"objects of dataset {self.dataset} in {self.store.describe()}"

    # --- landing ----------------------------------------------------------------------------

    def apply(self, change: ObjectsGeneration) -> None:
        """Delete `removed`, land `objects`, then (a base that replaces) delete what else the
        shard holds. An object already landed with the same version, size and digest is not
        sent again, so a generation applied twice, or resumed, rewrites nothing."""
        replacing = change.base and change.replace
        named: set[str] = set()  # a base that replaces keeps every name it lands
        refused = Refusals()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="land-objects") as pool:
            list(pool.map(self.store.delete, sorted(change.removed)))
            pending: set[Future[None]] = set()
            try:
                for obj in change.objects:
                    if replacing:
                        named.add(obj.name)
                    problem = self.name_problem(obj.name)
                    if problem is not None:
                        refused.add(obj.name, problem)
                        continue
                    if len(pending) >= self.workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    pending.add(pool.submit(self._land, obj, change.generation, change.may_hold))
                for future in pending:
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if refused:
            raise LandingError(
                f"dataset {change.dataset} shard {change.shard} generation {change.generation}:"
                f" {refused.count:,} object name{'s' if refused.count > 1 else ''} cannot be"
                f" landed in {self.store.describe()} (the other objects were):"
                f" {refused.describe()}"
            )
        if replacing:
            self._delete_unnamed(change, named)

    def name_problem(self, name: str) -> str | None:
        """Why the store cannot hold an object at exactly `name`, or None if it can."""
        problem = name_problem(name)
        if problem is not None:
            return problem
        key = getattr(self.store, "prefix", "") + name
        if len(key.encode()) > MAX_KEY_BYTES:
            return f"would be a key of {len(key.encode()):,} bytes, over {MAX_KEY_BYTES:,}"
        if self.store.describe().startswith("azure://"):
            if "\\" in name:
                return "holds a backslash, which Azure Blob reads as '/'"
            if any(part.endswith(".") for part in name.split("/")):
                return "has a component ending in '.', which Azure Blob may drop"
            if key.count("/") >= MAX_AZURE_SEGMENTS:
                return f"has over {MAX_AZURE_SEGMENTS} path segments, Azure Blob's limit"
        return None

    def _land(self, obj: LandedObject, generation: int, may_hold: bool = True) -> None:
        expected = digest_metadata(obj.part_sizes, obj.part_xxh3)
        landed = self.store.head(obj.name) if may_hold else None
        if landed is not None and _already_landed(landed, obj, expected):
            return
        metadata = {
            META_VERSION: obj.version,
            META_SIZE: str(obj.size),
            META_GENERATION: str(generation),
        }
        pieces = _CheckedPieces(obj, self.dataset)
        store = self.store
        # never under the store's own part size: a plan's chunks may be below S3's 5 MiB floor
        if isinstance(store, MultipartStore) and obj.size > max(self.part_size, store.part_size):
            length = part_length(obj.size, max(self.part_size, store.part_size))
            self._upload_in_parts(store, obj, metadata | (expected or {}), pieces, length)
            return
        data = b"".join(pieces)
        pieces.finish()
        store.put(obj.name, data, metadata | pieces.metadata())

    def _upload_in_parts(
        self,
        store: MultipartStore,
        obj: LandedObject,
        metadata: dict[str, str],
        pieces: _CheckedPieces,
        length: int,
    ) -> None:
        _abort_leftovers(store, obj.name)
        upload_id = store.begin_upload(obj.name, metadata)
        try:
            parts = [
                store.upload_part(obj.name, upload_id, number, block)
                for number, block in enumerate(recut(pieces, length), 1)
            ]
            pieces.finish()
            # the same metadata as begin_upload unless the manifest gave no part digests
            store.complete_upload(obj.name, upload_id, parts, metadata | pieces.metadata())
        except BaseException:
            with contextlib.suppress(MigratorError):
                store.abort_upload(obj.name, upload_id)
            raise

    def _delete_unnamed(self, change: ObjectsGeneration, named: set[str]) -> None:
        if self.shards is None:
            raise LandingError(
                f"dataset {change.dataset} shard {change.shard}: replacing a shard's objects"
                " needs the dataset's shard count (BucketObjects(shards=...))"
            )
        shards = self.shards
        stale = (
            info.key
            for info in self.store.list()
            if info.key not in named and shard_of(info.key.encode(), shards) == change.shard
        )
        with ThreadPoolExecutor(self.workers, thread_name_prefix="land-objects") as pool:
            list(pool.map(self.store.delete, stale))

    # --- proof ------------------------------------------------------------------------------

    def contents(self, shards: int) -> dict[int, LandedContent]:
        """One listing; an object's version is in its metadata, which listings lack, so each
        object is headed (HEAD_WORKERS at once)."""
        found = {shard: LandedContent() for shard in range(shards)}
        unnamed = dict.fromkeys(range(shards), 0)
        with ThreadPoolExecutor(HEAD_WORKERS, thread_name_prefix="land-contents") as pool:
            for info in ordered_map(pool, self._with_metadata, self.store.list(), HEAD_WORKERS * 4):
                if info is None:
                    continue  # deleted since the listing
                shard = shard_of(info.key.encode(), shards)
                content = found[shard]
                version = info.metadata.get(META_VERSION)
                content.digest = add(
                    content.digest, object_digest(info.key, info.size, version or "")
                )
                content.count += 1
                problem = _content_problem(info, version)
                if problem is None:
                    continue
                if len(content.problems) < NAMED_AT_MOST:
                    content.problems.append(f"object {shown(info.key)} {problem}")
                else:
                    unnamed[shard] += 1
        for shard, more in unnamed.items():
            if more:
                found[shard].problems.append(f"and {more:,} more objects like these")
        return found

    def _with_metadata(self, info: ObjectInfo) -> ObjectInfo | None:
        if META_VERSION in info.metadata:
            return info
        return self.store.head(info.key)


def digest_metadata(part_sizes: tuple[int, ...], part_xxh3: Iterable[str]) -> dict[str, str] | None:
    """migrator-xxh3 (and migrator-xxh3-parts) from the archive's part digests; None when the
    manifest gave none."""
    digests = [bytes.fromhex(h) for h in part_xxh3]
    if not digests:
        return None
    if len(digests) == 1:
        return {META_XXH3: digests[0].hex()}
    first = part_sizes[0] if part_sizes else 0
    return {
        META_XXH3: xxhash.xxh3_128_hexdigest(b"".join(digests)),
        META_XXH3_PARTS: f"{len(digests)}x{first}",
    }


def part_length(size: int, part_size: int) -> int:
    """`part_size`, or more (whole MiB) when an object would need over MAX_PARTS parts."""
    need = -(-size // MAX_PARTS)
    return part_size if need <= part_size else -(-need // MiB) * MiB


def recut(pieces: Iterable[bytes], length: int) -> Iterator[Buffer]:
    """The bytes of `pieces` as blocks of exactly `length` (the last may be shorter)."""
    held = bytearray()
    for piece in pieces:
        if not held and len(piece) == length:
            yield piece  # the archive's parts already have the landing's size: no copy
            continue
        held += piece
        while len(held) >= length:
            yield bytes(held[:length])
            del held[:length]
    if held:
        yield bytes(held)


class _CheckedPieces:
    """An object's decrypted parts as they stream: each checked against the manifest's digest
    when it gives one, and their total against the object's size."""

    def __init__(self, obj: LandedObject, dataset: str) -> None:
        self.obj = obj
        self.dataset = dataset
        self.size = 0
        self.sizes: list[int] = []
        self.part_digests: list[str] = []

    def __iter__(self) -> Iterator[bytes]:
        expected = self.obj.part_xxh3
        for index, piece in enumerate(self.obj.parts()):
            digest = xxhash.xxh3_128_hexdigest(piece)
            if expected and (index >= len(expected) or expected[index] != digest):
                self._fail(f"part {index + 1} is not the part its manifest names")
            self.sizes.append(len(piece))
            self.part_digests.append(digest)
            self.size += len(piece)
            yield piece

    def finish(self) -> None:
        if self.size != self.obj.size or len(self.part_digests) < len(self.obj.part_xxh3):
            self._fail(
                f"{self.size:,} bytes in {len(self.part_digests)} parts were read, the manifest"
                f" names {self.obj.size:,} bytes in {len(self.obj.part_sizes)} parts"
            )

    def metadata(self) -> dict[str, str]:
        return digest_metadata(tuple(self.sizes), self.part_digests) or {META_XXH3: _EMPTY_XXH3}

    def _fail(self, reason: str) -> None:
        raise LandingError(f"dataset {self.dataset}: object {shown(self.obj.name)}: {reason}")


_EMPTY_XXH3 = xxhash.xxh3_128_hexdigest(b"")  # an empty object has no parts


def _abort_leftovers(store: MultipartStore, name: str) -> None:
    """Discard uploads to `name` a killed landing left unfinished (S3 bills their parts until
    they are aborted); a server that cannot list them is left as it is."""
    with contextlib.suppress(UnsupportedOperationError):
        for key, upload_id in store.list_uploads(name):
            if key == name:
                store.abort_upload(key, upload_id)


def _already_landed(info: ObjectInfo, obj: LandedObject, expected: dict[str, str] | None) -> bool:
    meta = info.metadata
    if info.size != obj.size or meta.get(META_SIZE) != str(obj.size):
        return False
    if meta.get(META_VERSION) != obj.version:
        return False
    return expected is None or all(meta.get(k) == v for k, v in expected.items())


def _content_problem(info: ObjectInfo, version: str | None) -> str | None:
    if version is None:
        return "has no migrator metadata (not landed by migrator, or its metadata was replaced)"
    landed = info.metadata.get(META_SIZE)
    if landed != str(info.size):
        return f"is {info.size:,} bytes, landed as {landed} (changed behind landing's back)"
    return None

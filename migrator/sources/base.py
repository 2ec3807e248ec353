"""The seam for source I/O: local files, an S3 bucket or an Azure container look the same.

`list()` streams in name order (lexicographic: code points, or UTF-16 code units as Azure Blob
sorts), never held whole; a run lists once, in parallel where the source can split itself
(sources.listing), and keeps that listing. Reads check the object's version, so a part read
after the object changed is refused instead of mixed with parts of the old content. Zero-byte
folder markers (`dir/` as S3 consoles make them, Azure's `hdi_isfolder` blobs) hold no data and
are not listed; every other object is, whatever its name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from migrator.errors import SourceError
from migrator.objectnames import ListingNameCheck


@dataclass(frozen=True, slots=True)
class SourceObject:
    name: str  # '/'-separated name relative to the source root: the object's identity
    size: int
    version: str  # changes whenever the content may have: "size:mtime_ns", an ETag, ...


@runtime_checkable
class Source(Protocol):
    def list(self) -> Iterator[SourceObject]:
        """Every object in name order, streamed (listings are paged, never collected)."""

    def open(self, obj: SourceObject) -> BinaryIO:
        """A sequential reader of the whole object, as listed (SourceError if it changed)."""

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` of the object as listed (SourceError if changed)."""

    def location(self, obj: SourceObject) -> str:
        """Where the object is, for messages: a path or URL (never credentials)."""

    def describe(self) -> str:
        """Where the source is, for messages."""


def list_page_size(page_size: int, maximum: int) -> int:
    """`page_size`, if the service can list that many keys a page."""
    if not 1 <= page_size <= maximum:
        raise ValueError(f"page_size must be 1..{maximum}, not {page_size}")
    return page_size


class PrefixedSource:
    """A bucket or container read below a key prefix (S3, Azure Blob): names are relative to
    the prefix, and messages name the object by `root` (never a credential) and its key."""

    root: str  # e.g. "s3://BUCKET" or "azure://HOST/CONTAINER"
    prefix: str  # key_prefix(): empty, or ending in '/'

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"

    def describe(self) -> str:
        return f"{self.root}/{self.prefix}"

    def location(self, obj: SourceObject) -> str:
        return f"{self.root}/{self.prefix}{obj.name}"

    def check_range(self, obj: SourceObject, offset: int, length: int) -> None:
        """SourceError unless the range lies inside the object as listed."""
        if offset < 0 or length < 0 or offset + length > obj.size:
            raise SourceError(
                f"{self.location(obj)}: range {offset}+{length} is outside its {obj.size} bytes"
            )


def included(name: str, include: Sequence[str] | None) -> bool:
    """Glob patterns on the relative name; no patterns means everything."""
    return not include or any(fnmatch.fnmatch(name, pat) for pat in include)


class SourceView:
    """A source seen through a narrower listing: reads go to the source as they are."""

    inner: Source

    def list(self) -> Iterator[SourceObject]:
        return self.narrow(self.inner.list())

    def narrow(self, listing: Iterator[SourceObject]) -> Iterator[SourceObject]:
        """The inner source's listing, whole and in order, as this view shows it: the one place
        a view says what it lets through, whether the listing came from `list()` or in
        parallel runs (sources.listing)."""
        return listing

    def open(self, obj: SourceObject) -> BinaryIO:
        return self.inner.open(obj)

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        return self.inner.read_range(obj, offset, length)

    def location(self, obj: SourceObject) -> str:
        return self.inner.location(obj)

    def describe(self) -> str:
        return self.inner.describe()


class FilteredSource(SourceView):
    """A source seen through the plan's `include` patterns."""

    def __init__(self, inner: Source, include: Sequence[str] | None) -> None:
        self.inner = inner
        self.include = tuple(include) if include else None

    def narrow(self, listing: Iterator[SourceObject]) -> Iterator[SourceObject]:
        for obj in listing:
            if included(obj.name, self.include):
                yield obj


class RestorableNames(SourceView):
    """An objects dataset's source: names restore could not write back as the same paths are
    refused by name (objectnames), all of them at once when the listing ends.

    A name is only known to be a folder once a name under it comes, so the refusal comes at the
    end of the listing: a consumer lists the whole source before it moves a byte (run does).
    """

    def __init__(self, inner: Source, dataset: str) -> None:
        self.inner = inner
        self.dataset = dataset

    def narrow(self, listing: Iterator[SourceObject]) -> Iterator[SourceObject]:
        check = ListingNameCheck(self.inner.describe())
        for obj in listing:
            if check.accept(obj.name):
                yield obj
        check.finish(f"dataset {self.dataset}")

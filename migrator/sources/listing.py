"""A source listed once, by several threads over disjoint runs of its name order.

At tens of millions of objects one paged listing takes hours, so a source that can split itself
(SplittableSource) is listed as consecutive runs of names, each by a thread of its own, and the
runs are joined in order: the result is exactly `list(source.list())`. Two ways to split:

- by key (S3: ListObjectsV2 starts after any key): runs between cuts found by probing the
  service for the first name after a point (`plan_key_ranges`), so a flat namespace splits too;
- by folder (Azure Blob, whose listing cannot start after a name, and local folders): a folder
  (`prefix/`) holds a contiguous run of names, so walking a level or two with a '/' delimiter
  gives runs that need no cut (`plan_folder_units`).

The views of base.py (FilteredSource, RestorableNames) narrow the joined listing exactly as they
narrow `list()`, so every name is still checked, in order, before the listing returns.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from migrator.sources.base import Source, SourceObject, SourceView

LISTING_WORKERS = 8  # listing waits on the service, not on the CPU
RANGES_PER_WORKER = 4  # runs of unequal size balance out over the threads
PROBES_PER_WORKER = 32  # the most probes a key split may send, per thread: a few pages' cost
GROUPS_AT_MOST = 16  # next characters one split skips through (a probe each), at most
MAX_FOLDER_DEPTH = 4  # levels a folder split walks below the root, at most
TOP = "\U0010ffff"  # the last code point: `p + TOP` follows every name that starts with `p`
# (up to names holding U+10FFFF there, a noncharacter; those land in the next run, still once).


Ranges = Iterator[Iterator[SourceObject]]  # consecutive runs of one listing, in order


@runtime_checkable
class SplittableSource(Protocol):
    def list_ranges(self, parts: int) -> Ranges:
        """The listing as consecutive runs, each listed lazily, yielded as they are found (a run
        may be listed while the next ones are still being planned): joined in order, they are
        exactly `list()`. `parts` is how many threads will list them."""


def list_source_once(source: Source, *, workers: int = LISTING_WORKERS) -> list[SourceObject]:
    """The whole listing, in `source.list()`'s order, listed by up to `workers` threads when the
    source below its views can split itself, else as `list(source.list())`."""
    views: list[SourceView] = []
    base = source
    while isinstance(base, SourceView):
        views.append(base)
        base = base.inner
    if workers < 2 or not isinstance(base, SplittableSource):
        return list(source.list())
    futures: list[Future[list[SourceObject]]] = []
    stop = threading.Event()  # a failed run ends the others at their next object
    with ThreadPoolExecutor(workers, thread_name_prefix="listing") as pool:
        try:
            for objects in base.list_ranges(workers):
                futures.append(pool.submit(_listed, objects, stop))
                futures[-1].add_done_callback(functools.partial(_stop_on_error, stop))
            listing: Iterator[SourceObject] = _joined(futures)
            for view in reversed(views):
                listing = view.narrow(listing)
            return list(listing)
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise


def _listed(objects: Iterator[SourceObject], stop: threading.Event) -> list[SourceObject]:
    out = []
    for obj in objects:
        if stop.is_set():
            break
        out.append(obj)
    return out


def _stop_on_error(stop: threading.Event, future: Future[list[SourceObject]]) -> None:
    if not future.cancelled() and future.exception() is not None:
        stop.set()


def _joined(futures: list[Future[list[SourceObject]]]) -> Iterator[SourceObject]:
    for future in futures:
        yield from future.result()


def utf16_order(name: str) -> bytes:
    """Azure Blob's (and Azurite's) sort key: UTF-16 code units, not code points."""
    return name.encode("utf-16-be", "surrogatepass")


# --- by key -----------------------------------------------------------------------------------


class Probe(Protocol):
    def __call__(self, after: str | None, prefix: str) -> str | None:
        """The first name after `after` (from the first if None) that starts with `prefix`."""


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The names after `after` up to and including `upto` (None: no bound); every one of them
    starts with `prefix`, so the service can be asked for that prefix alone."""

    after: str | None
    upto: str | None
    prefix: str

    def within(self, names: Iterable[SourceObject]) -> Iterator[SourceObject]:
        """The names of a listing started after `after`, until one passes `upto`."""
        if self.upto is None:
            yield from names
            return
        for obj in names:
            if obj.name > self.upto:
                return
            yield obj


class OpenRange:
    """The names after `after`, listed at once while the ranges beyond are planned; `end_at`
    then ends it at the first cut it has not passed, and the ranges after that cut are listed
    beside it. A short listing is over before planning is: nothing is left to the ranges."""

    def __init__(self, after: str) -> None:
        self._upto: str | None = None
        self._last = after
        self._done = False
        self._lock = threading.Lock()

    def take(self, names: Sequence[str]) -> int:
        """How many of a page's names, from the first, are in the range; fewer than all when
        the range ends in this page."""
        with self._lock:
            upto = self._upto
            kept = len(names) if upto is None else bisect.bisect_right(names, upto)
            if kept:
                self._last = names[kept - 1]
            self._done = self._done or kept < len(names)
            return kept

    def finish(self) -> None:
        with self._lock:
            self._done = True

    def done(self) -> bool:
        """Whether the range has ended (its listing over, or ended at a cut)."""
        with self._lock:
            return self._done

    def end_at(self, cuts: Sequence[str]) -> int:
        """End the range at the first cut at or after the last name taken: the index of the
        first of the ranges (`cuts[i]` ends range i) it leaves to be listed beside it."""
        with self._lock:
            at = bisect.bisect_left(cuts, self._last)
            if self._done or at == len(cuts):
                return len(cuts) + 1
            self._upto = cuts[at]
            return at + 1


@dataclass(frozen=True, slots=True)
class _Cell:
    span: KeyRange
    first: str  # the span's first name
    depth: int
    whole: bool = False  # will not split further


def plan_key_ranges(
    probe: Probe,
    parts: int,
    after: str | None = None,
    askable: Callable[[str], bool] = lambda point: True,
    given_up: Callable[[], bool] = lambda: False,
) -> list[KeyRange]:
    """Consecutive ranges of the names after `after` (code point order), about
    RANGES_PER_WORKER * parts of them, none empty; [] if there is no name after `after`.

    Breadth first, a range splits where its names part: below the longest prefix they share,
    one range per next character (skipping from one to the next with a probe each), so ranges
    follow the names wherever they are dense. A point the service cannot be asked to start
    after (`askable` false) is never a cut: the names around it stay in one range. Planning
    stops early, with the ranges it has, once `given_up()` (the names were listed meanwhile)."""
    first = probe(after, "")
    if first is None:
        return []
    cells = [_Cell(KeyRange(after, None, ""), first, 0)]
    target = parts * RANGES_PER_WORKER
    counted = _Counted(probe)
    with ThreadPoolExecutor(parts, thread_name_prefix="listing-probe") as pool:
        while len(cells) < target and counted.sent < parts * PROBES_PER_WORKER:
            if given_up():
                break
            open_cells = [c for c in cells if not c.whole]
            if not open_cells:
                break
            depth = min(c.depth for c in open_cells)
            picked = [c for c in open_cells if c.depth == depth][:parts]
            most = max(2, math.ceil((target - len(cells)) / len(picked)) + 1)
            parts_of = pool.map(
                functools.partial(_split, probe=counted, most=most, askable=askable), picked
            )
            split = dict(zip(map(id, picked), parts_of, strict=True))
            cells = [new for old in cells for new in split.get(id(old), [old])]
    return [cell.span for cell in cells]


class _Counted:
    """A probe that counts what it sent, so planning stops within its budget."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self.sent = 0

    def __call__(self, after: str | None, prefix: str) -> str | None:
        with self._lock:
            self.sent += 1
        return self._probe(after, prefix)


def _split(cell: _Cell, probe: Probe, most: int, askable: Callable[[str], bool]) -> list[_Cell]:
    """The cell as up to `most` cells: its names grouped by their next character after the
    prefix they all share, consecutive groups joined evenly; [cell] marked whole if it does not
    split."""
    span, depth = cell.span, cell.depth + 1

    def next_after(after: str, prefix: str) -> str | None:
        name = probe(after, prefix)
        return name if name is not None and (span.upto is None or name <= span.upto) else None

    def shared(length: int) -> bool:  # does every name of the span start as the first does?
        point = cell.first[:length] + TOP
        return askable(point) and next_after(point, span.prefix) is None

    # The longest prefix of the first name that every name of the span starts with: galloping
    # out from the span's prefix (names often part a character or two below it), then halving.
    low, high, step = len(span.prefix), len(cell.first), 1
    while low < high:
        if not shared(min(low + step, high)):
            high = min(low + step, high) - 1
            break
        low, step = min(low + step, high), 2 * step
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if shared(mid) else (low, mid - 1)
    common = cell.first[:low]
    groups: list[_Cell] = []
    rest: _Cell | None = None  # the names after the last group, when the skipping stopped
    after, name = span.after, cell.first
    while True:
        group = name[: low + 1]  # the common prefix and the next character
        cut = name if len(name) == low else group + TOP  # after the group's last name
        if len(groups) >= GROUPS_AT_MOST or not askable(cut):
            rest = _Cell(KeyRange(after, span.upto, common), name, depth, not askable(cut))
            break
        following = next_after(cut, common)
        if following is None:
            groups.append(_Cell(KeyRange(after, span.upto, group), name, depth, cut == name))
            break
        if following[: low + 1] == group:  # a name with TOP right after `group`: no cut
            rest = _Cell(KeyRange(after, span.upto, common), name, depth, True)
            break
        groups.append(_Cell(KeyRange(after, cut, group), name, depth, cut == name))
        after, name = cut, following
    cells = _joined_evenly(groups, most - (rest is not None), common)
    cells += [rest] if rest is not None else []
    if len(cells) == 1:
        return [_Cell(span, cell.first, cell.depth, True)]
    return cells


def _joined_evenly(groups: list[_Cell], most: int, common: str) -> list[_Cell]:
    """Consecutive groups joined into at most `most` cells of about as many groups each."""
    if len(groups) <= most:
        return groups
    out = []
    for i in range(most):
        run = groups[len(groups) * i // most : len(groups) * (i + 1) // most]
        one = len(run) == 1
        span = KeyRange(run[0].span.after, run[-1].span.upto, run[0].span.prefix if one else common)
        out.append(_Cell(span, run[0].first, run[0].depth, one and run[0].whole))
    return out


# --- by folder --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Folder:
    """Every name that starts with `prefix` (which ends in '/'), listed later as one run."""

    prefix: str


Level = list[SourceObject | Folder]
Walk = Callable[[str], Level]  # one level below a prefix, in listing order


def plan_folder_units(walk: Walk, parts: int) -> list[list[SourceObject] | Folder]:
    """The listing as consecutive units: names met walking the top levels, and folders below
    them left for a thread to list whole. Levels are walked (each folder of a level by a thread
    of its own) until there are RANGES_PER_WORKER * parts folders, or MAX_FOLDER_DEPTH levels."""
    units = walk("")
    target = parts * RANGES_PER_WORKER
    with ThreadPoolExecutor(parts, thread_name_prefix="listing-walk") as pool:
        for _ in range(MAX_FOLDER_DEPTH):
            folders = [unit for unit in units if isinstance(unit, Folder)]
            if not folders or len(folders) >= target:
                break
            levels = dict(zip(folders, pool.map(walk, [f.prefix for f in folders]), strict=True))
            units = [
                item
                for unit in units
                for item in (levels[unit] if isinstance(unit, Folder) else [unit])
            ]
    out: list[list[SourceObject] | Folder] = []
    for is_folder, run in itertools.groupby(units, key=lambda unit: isinstance(unit, Folder)):
        if is_folder:
            out.extend(f for f in run if isinstance(f, Folder))
        else:
            out.append([obj for obj in run if isinstance(obj, SourceObject)])
    return out

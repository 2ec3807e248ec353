"""Listing in parallel runs (sources.listing): the runs joined are exactly the sequential listing
(order, every object once, folder markers left out, include patterns and the name check
applied), whatever the names: at run boundaries, prefixes of one another, beyond the BMP, in
Azure's UTF-16 order. The S3 and Azure sources run here against in-memory stand-ins of their
clients; tests/integration runs them against moto and Azurite."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobPrefix, BlobProperties
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.errors import SourceError, UnrestorableNamesError
from migrator.sources.azure import AzureSource
from migrator.sources.base import FilteredSource, RestorableNames, Source, SourceObject
from migrator.sources.listing import (
    RANGES_PER_WORKER,
    TOP,
    Folder,
    KeyRange,
    Level,
    list_source_once,
    plan_folder_units,
    plan_key_ranges,
    utf16_order,
)
from migrator.sources.local import LocalSource
from migrator.sources.s3 import S3Source

AWKWARD = [
    *("a", "a/", "a/b", "a/b/c", "a-b", "a.b", "a0", "ab", "a b", "é", "é/x", "\ue000"),
    *("\U0001f3ac", "\U0001f3ac/clip", "z" * 40, "~", " lead", "x/y/z", "x/y0", "x0/y"),
]


class Names:
    """A sorted set of names and a probe over it that counts its calls."""

    def __init__(self, names: list[str]) -> None:
        self.names = sorted(set(names))
        self.probes = 0
        self._lock = threading.Lock()

    def probe(self, after: str | None, prefix: str) -> str | None:
        with self._lock:
            self.probes += 1
        start = 0 if after is None else bisect.bisect_right(self.names, after)
        start = max(start, bisect.bisect_left(self.names, prefix))
        if start < len(self.names) and self.names[start].startswith(prefix):
            return self.names[start]
        return None

    def in_range(self, span: KeyRange) -> list[str]:
        return [
            n
            for n in self.names
            if (span.after is None or n > span.after) and (span.upto is None or n <= span.upto)
        ]


def check_partition(names: Names, spans: list[KeyRange], after: str | None = None) -> list[int]:
    """The spans cover every name after `after` once, in order, none empty, each name under its
    span's prefix; returns their sizes."""
    joined: list[str] = []
    sizes = []
    for span in spans:
        part = names.in_range(span)
        assert part, f"an empty range: {span}"
        assert all(n.startswith(span.prefix) for n in part), span
        joined += part
        sizes.append(len(part))
    assert joined == [n for n in names.names if after is None or n > after]
    for left, right in itertools.pairwise(spans):
        assert left.upto is not None and left.upto == right.after
    return sizes


# --- key ranges -------------------------------------------------------------------------------


def test_no_name_is_no_range_and_one_name_is_one() -> None:
    assert plan_key_ranges(Names([]).probe, 8) == []
    assert plan_key_ranges(Names(["a", "b"]).probe, 8, "b") == []
    spans = plan_key_ranges(Names(["only"]).probe, 8)
    assert spans == [KeyRange(None, None, "")]


def test_dense_names_split_into_balanced_ranges() -> None:
    names = Names([f"objects/{i:06d}.bin" for i in range(1, 20_001)])
    spans = plan_key_ranges(names.probe, 8)
    sizes = check_partition(names, spans)
    assert 8 <= len(spans) <= 2 * 8 * RANGES_PER_WORKER
    assert max(sizes) <= 20_000 // 8  # no thread's share in one range
    assert names.probes <= 8 * 32


def test_ranges_start_after_the_given_name() -> None:
    names = Names([f"k{i:05d}" for i in range(5000)])
    spans = plan_key_ranges(names.probe, 4, "k00999")
    assert spans[0].after == "k00999"
    check_partition(names, spans, "k00999")


def test_names_that_are_prefixes_of_others_stay_in_order() -> None:
    names = Names(AWKWARD + [f"a/{i}" for i in range(50)] + [f"a{i}" for i in range(50)])
    check_partition(names, plan_key_ranges(names.probe, 4))


def test_a_name_holding_the_last_code_point_is_listed_once() -> None:
    names = Names(["a", "a" + TOP, "a" + TOP + "x", "a/b", "b", "b" + TOP * 3, "c"])
    check_partition(names, plan_key_ranges(names.probe, 4))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="ab/.-0é\ue000\U0001f3ac" + TOP, min_size=1, max_size=6),
        max_size=80,
    ),
    st.integers(1, 8),
    st.one_of(st.none(), st.text(alphabet="ab/0", max_size=3)),
)
def test_any_names_are_partitioned_exactly(names: list[str], parts: int, after: str | None) -> None:
    listed = Names(names)
    spans = plan_key_ranges(listed.probe, parts, after)
    check_partition(listed, spans, after)


# --- S3Source over a stand-in client ----------------------------------------------------------


class FakeS3:
    """ListObjectsV2 as S3 answers it: Prefix, StartAfter, MaxKeys, continuation."""

    def __init__(self, keys: dict[str, int]) -> None:
        self.keys = dict(sorted(keys.items()))
        self.pages = 0  # requests for a page, beside probes for one key
        self.fail_after: int | None = None
        self._lock = threading.Lock()
        self._requests = 0

    def list_objects_v2(self, **request: Any) -> dict[str, Any]:
        with self._lock:
            self._requests += 1
            self.pages += request.get("MaxKeys") != 1
            if self.fail_after is not None and self._requests > self.fail_after:
                raise SourceError("the service is down")
        start = request.get("ContinuationToken") or request.get("StartAfter", "")
        prefix = request.get("Prefix", "")
        matching = [k for k in self.keys if k.startswith(prefix) and k > start]
        page = matching[: request.get("MaxKeys", 1000)]
        contents = [{"Key": k, "Size": self.keys[k], "ETag": f'"{k}"'} for k in page]
        truncated = len(matching) > len(page)
        out: dict[str, Any] = {"Contents": contents, "IsTruncated": truncated}
        if truncated:
            out["NextContinuationToken"] = page[-1]
        return out


def s3_source(keys: dict[str, int], prefix: str = "", page_size: int = 10) -> S3Source:
    return S3Source("bucket", prefix, client=FakeS3(keys), page_size=page_size)


def fake(source: S3Source) -> FakeS3:
    client = source._client
    assert isinstance(client, FakeS3)
    return client


def test_s3_listed_in_ranges_equals_its_listing() -> None:
    keys = {f"in/{name}": i for i, name in enumerate(AWKWARD)}
    keys |= {f"in/d{i % 7}/obj-{i:04d}": i for i in range(700)}
    keys |= {"in/": 0, "in/d3/": 0, "in/held/": 5, "out/x": 1, "im": 1}  # markers, outside
    source = s3_source(keys, "in")
    whole = list(source.list())
    assert "d3/" not in [o.name for o in whole] and "held/" in [o.name for o in whole]
    ranges = list(source.list_ranges(4))
    assert len(ranges) > 4
    assert [o for r in ranges for o in r] == whole
    assert list_source_once(source, workers=4) == whole


def test_s3_listing_of_one_page_is_not_cut() -> None:
    source = s3_source({f"k{i}": i for i in range(10)}, page_size=10)
    assert len(list(source.list_ranges(8))) == 1
    assert fake(source).pages == 1
    assert [o.name for o in list_source_once(source)] == [f"k{i}" for i in range(10)]


def test_s3_ranges_ask_for_about_the_pages_of_the_listing() -> None:
    source = s3_source({f"k{i:04d}": 1 for i in range(2000)}, page_size=50)
    ranges = list(source.list_ranges(8))
    listed = [o for r in ranges for o in r]
    assert len(listed) == 2000
    # Each range asks for its own pages, plus at most one that runs past its end.
    assert fake(source).pages <= 2000 // 50 + 2 * len(ranges)


def test_the_rest_listed_while_ranges_are_planned_ends_at_a_cut() -> None:
    keys = {f"k{i:04d}": 1 for i in range(3000)}
    source = s3_source(keys, page_size=100)
    runs = source.list_ranges(4)
    first, rest = next(runs), next(runs)
    taken = [next(rest) for _ in range(450)]  # the rest has come four pages further
    later = list(runs)  # planned now: the rest ends at the first cut past what it took
    assert later
    listed = [*first, *taken, *rest, *(o for run in later for o in run)]
    assert [o.name for o in listed] == list(keys)


def test_a_listing_done_before_the_ranges_are_planned_leaves_them_nothing() -> None:
    keys = {f"k{i:04d}": 1 for i in range(300)}
    source = s3_source(keys, page_size=100)
    runs = source.list_ranges(4)
    first, rest = list(next(runs)), list(next(runs))
    assert list(runs) == []
    assert [o.name for o in first + rest] == list(keys)
    client = fake(source)
    assert client.pages == 3 and client._requests <= 4  # planning gave up after a probe


def test_s3_listing_error_reaches_the_caller() -> None:
    source = s3_source({f"k{i:04d}": 1 for i in range(100)})
    fake(source).fail_after = 5
    with pytest.raises(SourceError, match="down"):
        list_source_once(RestorableNames(source, "files"), workers=4)


# --- folders: Azure over a stand-in client, local folders --------------------------------------


class FakeContainer:
    """List Blobs in UTF-16 code unit order, as Azurite; walk pages give folders first."""

    url = "http://127.0.0.1:10000/devstoreaccount1/box"

    def __init__(self, blobs: dict[str, int], folders: frozenset[str] = frozenset()) -> None:
        self.names = sorted(blobs, key=utf16_order)
        self.sizes = blobs
        self.folders = folders  # names of hierarchical namespace folders (hdi_isfolder)

    def _blob(self, name: str) -> BlobProperties:
        blob = BlobProperties(name=name)
        blob.size = self.sizes[name]
        blob.etag = f'"{name}"'
        blob.metadata = {"hdi_isfolder": "true"} if name in self.folders else {}
        return blob

    def list_blobs(self, name_starts_with: str | None = None, **_: Any) -> Iterator[Any]:
        for name in self.names:
            if name.startswith(name_starts_with or ""):
                yield self._blob(name)

    def walk_blobs(
        self, name_starts_with: str | None = None, delimiter: str = "/", **kwargs: Any
    ) -> Iterator[Any]:
        start = name_starts_with or ""
        items: list[Any] = []
        for name in self.names:
            if not name.startswith(start):
                continue
            cut = name.find(delimiter, len(start))
            if cut < 0:
                items.append(self._blob(name))
            elif not (
                items and isinstance(items[-1], BlobPrefix) and items[-1].name == name[: cut + 1]
            ):
                prefix = BlobPrefix.__new__(BlobPrefix)
                prefix.name = name[: cut + 1]
                items.append(prefix)
        size = kwargs.get("results_per_page") or 5000
        for at in range(0, len(items), size):
            page = items[at : at + size]  # a page gives its folders first, then its blobs
            yield from [i for i in page if isinstance(i, BlobPrefix)]
            yield from [i for i in page if not isinstance(i, BlobPrefix)]


def azure_source(
    blobs: dict[str, int], folders: frozenset[str] = frozenset(), page: int = 3
) -> AzureSource:
    client: Any = FakeContainer(blobs, folders)
    return AzureSource("box", "in", account_url=client.url, client=client, page_size=page)


def test_azure_runs_follow_utf16_order_and_skip_folders() -> None:
    # Beyond the BMP sorts before U+E000..U+FFFF in UTF-16, after them in code points.
    names = [*AWKWARD, "\uffff", "\U00010000", "\U00010000/in", "\uffff/in", "\ue000/in"]
    blobs = {f"in/{n}": i for i, n in enumerate(names)} | {
        f"in/f{i}/b{j}": j for i in range(5) for j in range(4)
    }
    blobs |= {"in/f2/": 0, "in/hns": 0, "in/hns/child": 3, "other": 1}  # fmt: skip
    source = azure_source(blobs, frozenset({"in/hns"}))
    whole = list(source.list())
    assert [o.name for o in whole] == sorted((o.name for o in whole), key=utf16_order)
    assert "hns" not in [o.name for o in whole] and "f2/" not in [o.name for o in whole]
    assert "hns/child" in [o.name for o in whole]
    ranges = list(source.list_ranges(2))
    assert len(ranges) > 2
    assert [o for r in ranges for o in r] == whole
    assert list_source_once(FilteredSource(source, ["*/*"]), workers=2) == [
        o for o in whole if "/" in o.name
    ]


def test_folder_units_walk_levels_until_there_are_enough() -> None:
    walked: list[str] = []

    def walk(prefix: str) -> Level:
        walked.append(prefix)
        if prefix.count("/") >= 2:
            return [SourceObject(prefix + "leaf", 1, "v")]
        return [Folder(f"{prefix}{i}/") for i in range(3)]

    units = plan_folder_units(walk, 2)  # 8 folders wanted: two levels walked give 9
    assert sorted(walked) == ["", "0/", "1/", "2/"]
    assert [u.prefix for u in units if isinstance(u, Folder)] == [
        f"{i}/{j}/" for i in range(3) for j in range(3)
    ]


def test_local_folders_listed_in_runs_equal_the_walk(tmp_path: Path) -> None:
    root = tmp_path / "src"
    files = [n for n in AWKWARD if not n.endswith("/") and n not in ("a", "a/b", "é", "\U0001f3ac")]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    for i in range(40):
        (root / f"d{i % 9}" / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 9}" / f"sub{i % 2}" / f"f{i}").write_bytes(b"x" * i)
    (root / "empty" / "deeper").mkdir(parents=True)
    source = LocalSource(root)
    whole = list(source.list())
    assert len(whole) == 40 + len(files)
    assert [o for r in source.list_ranges(3) for o in r] == whole
    assert list_source_once(source, workers=3) == whole
    with pytest.raises(SourceError, match="does not exist"):
        list_source_once(LocalSource(tmp_path / "missing"))


# --- the views --------------------------------------------------------------------------------


def test_the_name_check_sees_every_name_across_range_boundaries() -> None:
    keys = {f"p{i:03d}": 1 for i in range(300)} | {"p150/child": 1, "p299/..": 1}
    source = s3_source(keys, page_size=20)
    assert len(list(source.list_ranges(4))) > 4
    with pytest.raises(UnrestorableNamesError) as err:
        list_source_once(RestorableNames(source, "files"), workers=4)
    assert sorted(err.value.names) == ["p150", "p299/.."]
    with pytest.raises(UnrestorableNamesError) as again:
        list(RestorableNames(source, "files").list())
    assert str(again.value) == str(err.value)


def test_a_source_that_cannot_split_is_listed_as_it_lists() -> None:
    class Plain:
        calls = 0

        def list(self) -> Iterator[SourceObject]:
            Plain.calls += 1
            yield from (SourceObject(n, 1, "v") for n in ("b", "a/x"))

    plain: Any = Plain()
    source: Source = FilteredSource(plain, ["a/*"])
    assert list_source_once(source) == [SourceObject("a/x", 1, "v")]
    assert Plain.calls == 1


def test_a_failed_run_ends_the_others() -> None:
    class Endless:
        """A run that would list forever beside one that fails."""

        def list_ranges(self, parts: int) -> Iterator[Iterator[SourceObject]]:
            yield (SourceObject(f"a{i:012d}", 1, "v") for i in itertools.count())
            yield self.failing()

        def failing(self) -> Iterator[SourceObject]:
            yield SourceObject("b", 1, "v")
            raise SourceError("b: cannot list")

        def list(self) -> Iterator[SourceObject]:
            raise AssertionError("listed in runs, not whole")

    endless: Any = Endless()
    with pytest.raises(SourceError, match="cannot list"):
        list_source_once(endless, workers=2)

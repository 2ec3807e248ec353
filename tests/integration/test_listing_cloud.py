"""A bucket (moto) and a container (Azurite) listed in parallel runs equal their sequential
listing, object for object, on a few thousand awkward names: flat and deep, prefixes of one
another, folder markers, beyond the BMP (Azure sorts those by UTF-16 code units)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.storage.blob import ContainerClient

from migrator.demo.motoserver import s3_client
from migrator.sources.azure import AzureSource
from migrator.sources.base import FilteredSource, RestorableNames, Source
from migrator.sources.listing import list_source_once, utf16_order
from migrator.sources.s3 import S3Source

pytestmark = pytest.mark.integration

STEMS = ["a", "a-", "a.", "a0", "ab", "é", "\ue000", "\ufffd", "\U00010000", "\U0001f3ac",
         "x y", "p+q", "100%", "q=1&y", "~", "Z"]  # fmt: skip
NOT_XML = "\uffff"  # a key S3 holds, but cannot be asked to start after (moto answers 500)
TAILS = ["", "1", "/x", "/x/y", "/x0", "//z", "/\U0001f3ac/1"]


def awkward_names(stems: list[str]) -> dict[str, bytes]:
    """About 3,000 names, and the folder markers a console leaves (not objects)."""
    names: dict[str, bytes] = {}
    for i in range(800):
        names[f"flat-{i:05d}"] = b"f"  # a flat run: split by key, or not at all
    for i in range(800):
        names[f"tree/{i % 13}/{i % 7}/obj {i}.bin"] = b"t" * (i % 5)
    for stem in stems:
        for tail in TAILS:
            for n in range(12):
                names[f"{stem}{tail}-{n}"] = stem.encode()
    names |= {"tree/": b"", "tree/3/": b"", "held/": b"a marker that holds data", "tree/3": b"3"}
    return names


def put_all(put: Callable[[str, bytes], object], names: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: put(*item), names.items()))


def check_equal(source: Source) -> None:
    whole = list(source.list())
    assert len(whole) > 2500
    assert list_source_once(source, workers=8) == whole
    filtered = FilteredSource(source, ["*/*", "flat-0001*"])
    assert list_source_once(filtered, workers=8) == list(filtered.list())
    # Every name seen, in order, by the name check: the refusals are the sequential ones.
    with pytest.raises(Exception) as parallel:
        list_source_once(RestorableNames(source, "files"), workers=8)
    with pytest.raises(Exception) as sequential:
        list(RestorableNames(source, "files").list())
    assert str(parallel.value) == str(sequential.value)


def test_s3_listed_in_parallel_equals_its_listing(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    client = s3_client(endpoint)
    names = awkward_names([*STEMS, NOT_XML])
    put_all(lambda key, data: client.put_object(Bucket=bucket, Key=f"in/{key}", Body=data), names)
    client.put_object(Bucket=bucket, Key="in-other/x", Body=b"outside the prefix")
    source = S3Source(bucket, "in", endpoint_url=endpoint, page_size=200)
    assert len(list(source.list_ranges(8))) > 8
    check_equal(source)
    listed = [o.name for o in source.list()]
    assert listed == sorted(listed)
    assert "tree/3/" not in listed and "held/" in listed and "tree/3" in listed


def test_azure_listed_in_parallel_equals_its_listing(
    azure_container: tuple[str, str, str],
) -> None:
    connection_string, name, blob_url = azure_container
    client = ContainerClient.from_connection_string(connection_string, name)
    names = awkward_names(STEMS)  # Azurite cannot list a name holding U+FFFF at all
    put_all(lambda key, data: client.upload_blob(f"in/{key}", data, overwrite=True), names)
    client.upload_blob("in-other/x", b"outside the prefix")
    source = AzureSource(
        name, "in", account_url=blob_url, connection_string=connection_string, page_size=200
    )
    assert len(list(source.list_ranges(8))) > 8
    check_equal(source)
    listed = [o.name for o in source.list()]
    assert listed == sorted(listed, key=utf16_order)
    assert listed != sorted(listed)  # the order the walk has to follow is not code points'

"""Which object names restore can write back as the same paths on a POSIX filesystem, and the
check a listing makes as the source streams: every name alone, every file another name needs as
a folder, every refusal named. (tests/unit/test_restore_names.py takes them through run and
restore.)
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from migrator.errors import SourceError, UnrestorableNamesError
from migrator.objectnames import (
    MAX_COMPONENT_BYTES,
    MAX_NAME_BYTES,
    NAMED_AT_MOST,
    ListingNameCheck,
    name_problem,
)
from migrator.sources.local import LocalSource

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


# --- the rules, one name at a time -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "is empty"),
        ("x//y", "has an empty component ('//')"),
        ("./x/y", "has a '.' component"),
        ("x/./y", "has a '.' component"),
        ("..", "has a '..' component"),
        ("a/../b", "has a '..' component"),
        ("/x", "starts with '/'"),
        ("dir/", "ends with '/' (a folder marker that holds data)"),
        ("nul\x00byte", "holds the control character U+0000"),
        ("line\nfeed", "holds the control character U+000A"),
        ("tab\tin/name", "holds the control character U+0009"),
        ("del\x7f", "holds the control character U+007F"),
        ("c1\x85", "holds the control character U+0085"),
        ("bad\udcffbytes", "is not valid UTF-8"),  # os.listdir's stand-in for the byte 0xFF
        ("L" * 256, "has a component of 256 bytes, over the 255 a file name may hold"),
        ("é" * 128, "has a component of 256 bytes"),  # bytes, not characters
        ("d/" * 512 + "z", f"is 1,025 bytes long, over {MAX_NAME_BYTES:,}"),
    ],
)
def test_names_restore_could_not_write_back_are_refused_with_the_reason(
    name: str, reason: str
) -> None:
    problem = name_problem(name)
    assert problem is not None and problem.startswith(reason), problem


@pytest.mark.parametrize(
    "name",
    [
        "plain.bin",
        "back\\slash",  # a character of the name on POSIX, not a separator
        "Case",
        NFC,
        NFD,  # distinct from NFC on a POSIX filesystem: both restored as they are
        ".hidden",
        ".f.restoring",
        "...",
        "a..b/..c",
        " spaced name ",
        "L" * MAX_COMPONENT_BYTES,
        "/".join(["d" * 200] * 5) + "/" + "z" * 19,  # 1,024 bytes: the longest name
        "emoji \U0001f600/日本語",
    ],
)
def test_names_a_posix_filesystem_holds_as_they_are_pass(name: str) -> None:
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name_problem(name) is None


# --- a listing: conflicts between names, every refusal named ------------------------------


def check_all(names: list[str]) -> ListingNameCheck:
    check = ListingNameCheck("src://")
    for name in names:
        check.accept(name)
    return check


def test_a_file_that_another_name_needs_as_a_folder_is_refused_once() -> None:
    names = [
        "p",
        "p-x",
        "p.txt",
        "p/child",
        "p/child/deeper",
        "p/more",
        "q",
        "q0/x",
        "r/s",
        "r/s/t",
    ]
    check = check_all(names)
    assert check.refused.named == [
        ("p", "is a file, and the folder of 'p/child'"),
        ("p/child", "is a file, and the folder of 'p/child/deeper'"),
        ("r/s", "is a file, and the folder of 'r/s/t'"),
    ]
    with pytest.raises(UnrestorableNamesError) as err:
        check.finish("dataset files")
    assert err.value.exit_code == 2
    assert err.value.count == 3
    assert err.value.names == ["p", "p/child", "r/s"]


def test_names_that_only_share_a_prefix_are_no_conflict() -> None:
    check = check_all(["a", "a b", "a-b/c", "a.b", "ab/c", "ab/d", "abc", "b"])
    check.finish("dataset files")  # no refusal: returns


def test_every_refused_name_is_counted_and_the_first_ones_named() -> None:
    bad = [f"x{i:03d}//y" for i in range(50)]
    check = check_all(sorted([*bad, "good"]))
    with pytest.raises(UnrestorableNamesError) as err:
        check.finish("dataset files")
    message = str(err.value)
    assert err.value.count == 50
    assert err.value.names == bad[:NAMED_AT_MOST]
    assert message.startswith("dataset files (src://): 50 object names cannot be restored")
    assert "'x019//y' has an empty component" in message
    assert "x020//y" not in message
    assert message.endswith("; and 30 more")


def test_a_listing_out_of_name_order_is_refused() -> None:
    check = ListingNameCheck("src://")
    check.accept("b")
    with pytest.raises(SourceError, match=re.escape("not in name order ('a' came after 'b')")):
        check.accept("a")
    again = ListingNameCheck("src://")
    again.accept("a")
    with pytest.raises(SourceError, match="not in name order"):
        again.accept("a")  # listed twice


def test_utf16_order_as_azure_lists_is_name_order_too() -> None:
    # Azure Blob (Azurite) sorts by UTF-16 code units: U+1F600 comes before U+FF01.
    check = check_all(["a\U0001f600", "a\uff01/b", "a\uff01/c"])
    check.finish("dataset files")


# --- sources ---------------------------------------------------------------------------------


def test_local_source_lists_whole_names_in_name_order(tmp_path: Path) -> None:
    for name in ["a/x", "a-b", "a.txt", "a0", "b/c/d", "b/c-e", "b/c.f"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    listed = [obj.name for obj in LocalSource(tmp_path).list()]
    assert listed == sorted(listed)
    assert listed == ["a-b", "a.txt", "a/x", "a0", "b/c-e", "b/c.f", "b/c/d"]

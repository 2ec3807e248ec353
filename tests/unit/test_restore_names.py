"""Object names through the command: `run` refuses names restore could not write back before
any byte moves; `restore` writes every object whole at exactly its name, or exits non-zero
naming each one it could not (names migrated before the check existed, a path too long for the
folder, a file where a folder must go, two names the filesystem holds as one, a full disk).
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import xxhash

import migrator.read.restore_files as restore_files
from migrator.cli import main
from migrator.errors import RestoreIncompleteError, UnrestorableNamesError
from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import Plan, load_plan
from migrator.read.restore import Restorer
from migrator.sources.base import RestorableNames, SourceObject
from migrator.state.db import StateDB
from migrator.stores.local import LocalStore
from migrator.write.run import MigrationRun
from tests.planfiles import files_below, write_plan

OBJECTS = """\
  - {name: files, kind: objects, source: {kind: local, path: src}, shards: 3, part_size: 64KiB}
"""
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


@dataclass
class NamedObjects:
    """A source that holds any names, as a bucket can: the data before the check existed."""

    objects: dict[str, bytes]

    def list(self) -> Iterator[SourceObject]:
        for name in sorted(self.objects):
            data = self.objects[name]
            yield SourceObject(name, len(data), xxhash.xxh3_64_hexdigest(data))

    def open(self, obj: SourceObject) -> BinaryIO:
        return io.BytesIO(self.objects[obj.name])

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        return self.objects[obj.name][offset : offset + length]

    def location(self, obj: SourceObject) -> str:
        return f"mem://{obj.name}"

    def describe(self) -> str:
        return "mem://"


def test_the_checked_source_yields_only_good_names_then_refuses_the_rest() -> None:
    source = RestorableNames(NamedObjects({"a": b"1", "b//c": b"2", "d": b"3"}), "files")
    seen: list[str] = []
    refused = re.escape("dataset files (mem://): 1 object name")
    with pytest.raises(UnrestorableNamesError, match=refused):
        seen.extend(obj.name for obj in source.list())
    assert seen == ["a", "d"]


# --- through the command: run refuses, restore writes every object or names it -----------


@dataclass
class Done:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """`migrator ARGS` in this process, through the same entry point as the command."""

    def invoke(*args: str | Path) -> Done:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return invoke


def site(root: Path) -> Path:
    (root / "dest").mkdir()
    (root / "src").mkdir()
    return write_plan(root, datasets=OBJECTS, destination="{kind: local, path: dest}")


def put(root: Path, name: str | bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(root / "src"), os.fsencode(name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def stored_data(root: Path) -> list[str]:
    """Manifests and object parts at the destination (keys may be written before listing)."""
    return [name for name in files_below(root / "dest") if "/g0" in name]


def test_run_refuses_unrestorable_local_names_before_any_byte_moves(
    tmp_path: Path, cli: Any
) -> None:
    plan = site(tmp_path)
    put(tmp_path, "good.bin", b"good")
    put(tmp_path, b"not-utf8-\xff.bin", b"latin-1 name")
    put(tmp_path, "line\nfeed.txt", b"a control character")
    deep = "/".join(["d" * 250] * 4) + "/" + "z" * 100  # 1,104 bytes: over 1,024
    put(tmp_path, deep, b"too long a name")
    done = cli("run", plan)
    assert done.code == 2, done.err
    line = done.err.strip().splitlines()[-1]
    assert line.startswith("migrator: error: dataset files (")
    assert "3 object names cannot be restored as the same path" in line
    assert "'not-utf8-\\udcff.bin' is not valid UTF-8" in line
    assert "'line\\nfeed.txt' holds the control character U+000A" in line
    assert "is 1,104 bytes long, over 1,024" in line
    assert "Traceback" not in done.err
    assert stored_data(tmp_path) == []


def test_faithful_but_tricky_local_names_restore_exactly(tmp_path: Path, cli: Any) -> None:
    plan = site(tmp_path)
    names = {
        "f": b"the real f",
        ".f.restoring": b"what restore once used as f's temporary name",
        ".migrator-restore-x/y": b"looks like restore's temporary folder",
        "Case": b"upper",
        "case": b"lower",
        NFC: b"composed",
        NFD: b"decomposed",
        "back\\slash": b"a backslash is a character",
        "...": b"three dots",
        " spaced ": b"spaces",
        "p-x": b"beside p",
        "p/child": b"below p",
        "p.txt": b"after p",
        "L" * 255: b"the longest file name",
        "empty": b"",
        "big.bin": os.urandom(200_000),  # several parts
    }
    for name, data in names.items():
        put(tmp_path, name, data)
    assert cli("run", plan).code == 0
    done = cli("restore", plan, "--dataset", "files", "--out", tmp_path / "out")
    assert done.code == 0, done.err
    assert f"restored files: {len(names)} files" in done.out
    assert files_below(tmp_path / "out") == names
    left = [n for n in os.listdir(tmp_path / "out") if n.startswith(".migrator-restore-")]
    assert left == [".migrator-restore-x"]  # the source's folder; restore's own is gone


@dataclass
class Migrated:
    plan_file: Path
    plan: Plan
    store: LocalStore
    provider: LocalKeyProvider


def migrate_unchecked(root: Path, objects: dict[str, bytes]) -> Migrated:
    """A run that takes every name, as runs did before names were checked."""
    plan_file = site(root)
    plan = load_plan(plan_file)
    assert plan.keys.kek_file is not None
    store = LocalStore(root / "dest")
    provider = LocalKeyProvider(plan.keys.kek_file)
    with StateDB.sqlite_file(plan.state_dir / "state.sqlite") as state:
        run = MigrationRun(plan, store, provider, state)
        run.open_source = lambda ds: NamedObjects(objects)
        assert run.run().datasets[0].committed
    return Migrated(plan_file, plan, store, provider)


OLD_NAMES = {
    "x//y": b"double slash",
    "./x/y": b"dot first",
    "x/y": b"the plain one",
    "/x": b"absolute",
    "..": b"dot dot",
    "a/../b": b"climbs",
    "p": b"a file",
    "p/child": b"under the file",
    "L" * 300: b"a component too long",
    "d/" * 600 + "z": b"a name too long",
    "ctl\x01name": b"a control character",
    "f": b"f itself",
    ".f.restoring": b"f's old temporary name",
    "ok/one": b"one",
    "ok/two": b"two" * 40_000,
}


def test_restore_of_names_migrated_before_the_check_names_every_one_it_cannot_write(
    tmp_path: Path, cli: Any
) -> None:
    site = migrate_unchecked(tmp_path, OLD_NAMES)
    out = tmp_path / "out"
    done = cli("restore", site.plan_file, "--dataset", "files", "--out", out)
    assert done.code == 3, done.err
    line = done.err.strip().splitlines()[-1]
    assert "Traceback" not in done.err and "internal error" not in line
    restored = files_below(out)
    for name in ["x//y", "./x/y", "/x", "..", "a/../b", "L" * 300, "d/" * 600 + "z"]:
        assert name not in restored
    for shown in ["'x//y' has an empty", "'./x/y' has a '.'", "'/x' starts with '/'"]:
        assert shown in line
    assert "'..' has a '..'" in line and "'a/../b' has a '..'" in line
    assert "'ctl\\x01name' holds the control character U+0001" in line
    assert "has a component of 300 bytes" in line and "is 1,201 bytes long" in line
    # p and p/child: whichever came first is written, the other named.
    assert ("p" in restored) != ("p/child" in restored)
    if "p" in restored:
        assert "'p/child' needs 'p' as a folder, and it is a file" in line
    else:
        assert "'p' is a folder here" in line
    good = {n: d for n, d in OLD_NAMES.items() if n in ("x/y", "f", ".f.restoring", "ok/one")}
    good["ok/two"] = OLD_NAMES["ok/two"]
    assert {n: restored[n] for n in good} == good  # nothing merged into x/y or f
    assert len(restored) == 6
    assert line.startswith(
        f"migrator: error: dataset files: restored 6 of {len(OLD_NAMES)} objects into {out};"
        f" {len(OLD_NAMES) - 6} could not be written at their names"
    )
    assert sorted(os.listdir(out)) == sorted(["f", ".f.restoring", "ok", "x", "p"])


def test_restore_names_an_object_whose_path_is_too_long_for_the_folder(tmp_path: Path) -> None:
    long_name = "/".join(["n" * 200] * 4) + "/tail"  # 809 bytes: fine as a name
    site = migrate_unchecked(tmp_path, {long_name: b"deep", "short": b"short"})
    out = tmp_path.joinpath(*["o" * 250] * 13)  # over 3,250 bytes: with the name, over 4,096
    out.mkdir(parents=True)
    with pytest.raises(RestoreIncompleteError) as err:
        Restorer(site.plan, site.store, site.provider).restore("files", out)
    assert err.value.names == [long_name]
    assert "would be a path of" in str(err.value) and "over the 4,096" in str(err.value)
    assert err.value.written == 1
    assert (out / "short").read_bytes() == b"short"


def test_restore_never_writes_two_names_into_one_file(tmp_path: Path) -> None:
    """A folder where B is A (here a link; on a case-insensitive filesystem, Case and case):
    the second name is named, the first file kept as it was written."""
    site = migrate_unchecked(tmp_path, {"A/x": b"from A", "B/x": b"from B", "c": b"c"})
    out = tmp_path / "out"
    (out / "A").mkdir(parents=True)
    (out / "B").symlink_to("A")
    with pytest.raises(RestoreIncompleteError) as err:
        Restorer(site.plan, site.store, site.provider).restore("files", out)
    (second,) = err.value.names
    first = "A/x" if second == "B/x" else "B/x"
    assert f"is the same file as 'A/x' on the filesystem under {out}" in str(err.value)
    assert (out / "A/x").read_bytes() == {"A/x": b"from A", "B/x": b"from B"}[first]
    assert err.value.written == 2
    assert (out / "c").read_bytes() == b"c"


def test_restore_never_writes_into_its_own_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = migrate_unchecked(tmp_path, {".migrator-restore-fixed/x": b"x", "y": b"y"})
    out = tmp_path / "out"

    def fixed(prefix: str, dir: Path) -> str:  # the random name, made predictable
        os.mkdir(os.path.join(dir, prefix + "fixed"))
        return os.path.join(dir, prefix + "fixed")

    monkeypatch.setattr(restore_files.tempfile, "mkdtemp", fixed)
    with pytest.raises(RestoreIncompleteError, match="the name of this restore's temporary"):
        Restorer(site.plan, site.store, site.provider).restore("files", out)
    assert files_below(out) == {"y": b"y"}
    assert os.listdir(out) == ["y"]  # the temporary folder is gone


def test_a_full_disk_stops_the_restore_naming_the_object_and_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = {f"o{i}": bytes([i]) * 10 for i in range(5)}
    site = migrate_unchecked(tmp_path, objects)
    real = restore_files._TempFile.write

    def full(self: Any, data: bytes) -> None:
        if self.target.name == "o3":
            raise OSError(28, os.strerror(28))
        real(self, data)

    monkeypatch.setattr(restore_files._TempFile, "write", full)
    with pytest.raises(RestoreIncompleteError) as err:
        Restorer(site.plan, site.store, site.provider).restore("files", tmp_path / "out")
    assert err.value.names == ["o3"]
    assert "restore stopped at 'o3'" in str(err.value)
    assert "No space left on device" in str(err.value)
    written = files_below(tmp_path / "out")
    assert "o3" not in written
    assert f"{err.value.written:,} objects were restored before it" in str(err.value)
    assert len(written) == err.value.written
    assert [n for n in os.listdir(tmp_path / "out") if n.startswith(".")] == []


def test_a_restore_folder_that_cannot_be_written_is_named(tmp_path: Path, cli: Any) -> None:
    site = migrate_unchecked(tmp_path, {"a": b"a"})
    taken = tmp_path / "a-file"
    taken.write_bytes(b"not a folder")
    out = taken / "out"  # below a file
    done = cli("restore", site.plan_file, "--dataset", "files", "--out", out)
    assert done.code == 2, done.err
    assert done.err.strip() == f"migrator: error: --out {out}: cannot write there (Not a directory)"

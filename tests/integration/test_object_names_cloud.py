"""Object names from a bucket (moto) or a container (Azurite) that restore could not write back
as the same paths: `run` refuses them by name before any byte moves; keys a POSIX filesystem
holds as they are restore exactly; keys migrated before the check existed end in a restore that
names every object it could not write, never in exit 0 with fewer objects."""

from __future__ import annotations

import os
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from migrator.cli import main
from migrator.demo.motoserver import s3_client
from migrator.errors import UnrestorableNamesError
from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import load_plan
from migrator.sources.azure import AzureSource
from migrator.sources.base import FilteredSource, RestorableNames
from migrator.sources.factory import open_source
from migrator.state.db import StateDB
from migrator.stores.local import LocalStore
from migrator.write.run import MigrationRun
from tests.planfiles import files_below, write_plan

pytestmark = pytest.mark.integration

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
FAITHFUL = {
    "x/y": b"the plain one",
    "f": b"the real f",
    ".f.restoring": b"what restore once used as f's temporary name",
    "Case": b"upper",
    "case": b"lower",
    NFC: b"composed",
    NFD: b"decomposed",
    "back\\slash": b"a backslash is a character of the name",
    "p-x": b"beside p",
    "p.txt": b"after p",
    "L" * 255: b"the longest file name",
    "sub/a": b"a",
    "empty": b"",
    "big.bin": bytes(range(256)) * 800,  # 200 KiB: several 64 KiB parts
}
UNRESTORABLE = {  # name -> the reason `run` gives
    "x//y": "has an empty component ('//')",
    "./x/y": "has a '.' component",
    "/x": "starts with '/'",
    "..": "has a '..' component",
    "a/../b": "has a '..' component",
    "p": "is a file, and the folder of 'p/child'",
    "L" * 300: "has a component of 300 bytes",
    "d/" * 550 + "z": "is 1,101 bytes long, over 1,024",
    "ctl\x01name": "holds the control character U+0001",
    "tab\tname": "holds the control character U+0009",
    "held/": "ends with '/' (a folder marker that holds data)",
}
MARKERS = ["sub/", "dir/"]  # zero-byte folder markers, as the S3 console makes them


def s3_plan(root: Path, endpoint: str, bucket: str) -> Path:
    (root / "dest").mkdir()
    where = f"kind: s3, bucket: {bucket}, region: us-east-1, endpoint_url: '{endpoint}'"
    datasets = (
        f"  - {{name: files, kind: objects, shards: 3, part_size: 64KiB,"
        f" source: {{{where}, prefix: in}}}}\n"
    )
    return write_plan(root, datasets=datasets, destination="{kind: local, path: dest}")


def fill(endpoint: str, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3_client(endpoint)
    for name, data in objects.items():
        client.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
    for marker in MARKERS:
        client.put_object(Bucket=bucket, Key=f"in/{marker}", Body=b"")


@pytest.fixture
def command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`migrator ARGS` in this process, through the command's entry point: (code, out, err)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def invoke(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_s3_run_refuses_every_unrestorable_key_by_name_before_any_byte_moves(
    tmp_path: Path, s3_bucket: tuple[str, str], command: Any
) -> None:
    endpoint, bucket = s3_bucket
    fill(endpoint, bucket, {**FAITHFUL, **dict.fromkeys(UNRESTORABLE, b"data"), "p/child": b"c"})
    code, _, err = command("run", s3_plan(tmp_path, endpoint, bucket))
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"migrator: error: dataset files (s3://{bucket}/in/):")
    assert f"{len(UNRESTORABLE)} object names cannot be restored as the same path" in line
    for name, reason in UNRESTORABLE.items():
        shown = repr(name) if len(name) <= 120 else repr(name[:100])
        assert f"{shown}" in line and reason in line, name
    for name in [*FAITHFUL, *MARKERS]:
        assert repr(name) not in line  # x/y, Case, NFD, the markers...: all fine
    assert "Traceback" not in err
    assert [n for n in files_below(tmp_path / "dest") if "/g0" in n] == []


def test_s3_keys_a_posix_filesystem_holds_restore_exactly(
    tmp_path: Path, s3_bucket: tuple[str, str], command: Any
) -> None:
    endpoint, bucket = s3_bucket
    fill(endpoint, bucket, FAITHFUL)
    plan = s3_plan(tmp_path, endpoint, bucket)
    code, _, err = command("run", plan)
    assert code == 0, err
    code, out, err = command("restore", plan, "--dataset", "files", "--out", tmp_path / "out")
    assert code == 0, err
    assert f"restored files: {len(FAITHFUL)} files" in out
    assert files_below(tmp_path / "out") == FAITHFUL  # the markers hold no data: no file
    assert not (tmp_path / "out/dir").exists()
    assert [n for n in os.listdir(tmp_path / "out") if n.startswith(".migrator-")] == []


def test_s3_keys_migrated_before_the_check_end_in_a_restore_naming_each_one(
    tmp_path: Path, s3_bucket: tuple[str, str], command: Any
) -> None:
    """x//y, ./x/y and x/y once restored as one file, and f over .f.restoring: now each object
    is written at its own name, or named, and the command fails."""
    endpoint, bucket = s3_bucket
    old = {"x//y": b"double", "./x/y": b"dot", "/x": b"abs", "a/../b": b"up", "p": b"file"}
    old |= {"p/child": b"below a file", "ctl\x01name": b"ctl"}
    fill(endpoint, bucket, {**FAITHFUL, **old})
    plan_file = s3_plan(tmp_path, endpoint, bucket)
    plan = load_plan(plan_file)
    assert plan.keys.kek_file is not None
    with StateDB.sqlite_file(plan.state_dir / "state.sqlite") as state:
        run = MigrationRun(
            plan, LocalStore(tmp_path / "dest"), LocalKeyProvider(plan.keys.kek_file), state
        )
        unchecked = open_source(plan.datasets[0])
        assert isinstance(unchecked, RestorableNames)
        assert isinstance(unchecked.inner, FilteredSource)
        run.open_source = lambda ds: unchecked.inner  # as runs listed before names were checked
        assert run.run().datasets[0].committed

    out = tmp_path / "out"
    code, stdout, err = command("restore", plan_file, "--dataset", "files", "--out", out)
    assert code == 3, err
    line = err.strip().splitlines()[-1]
    restored = files_below(out)
    total = len(FAITHFUL) + len(old)
    written = len(FAITHFUL) + 1  # p or p/child, whichever came first
    assert line.startswith(
        f"migrator: error: dataset files: restored {written} of {total} objects into {out};"
        f" {total - written} could not be written at their names"
    )
    for name in ["x//y", "./x/y", "/x", "a/../b", "ctl\x01name"]:
        assert repr(name) in line
    assert ("p" in restored) != ("p/child" in restored)
    assert {n: restored[n] for n in FAITHFUL} == FAITHFUL  # x/y and f are their own
    assert len(restored) == written
    assert stdout == ""
    assert "Traceback" not in err and "internal error" not in err


def test_azure_folder_markers_are_skipped_and_markers_holding_data_refused(
    azure_container: tuple[str, str, str],
) -> None:
    connection_string, name, blob_url = azure_container
    client = ContainerClient.from_connection_string(connection_string, name)
    client.upload_blob("in/folder", b"", metadata={"hdi_isfolder": "true"})  # a namespace's
    client.upload_blob("in/folder/child", b"child")
    client.upload_blob("in/dir/", b"")
    client.upload_blob("in/held/", b"data under a folder's name")
    client.upload_blob("in/p", b"p")
    client.upload_blob("in/p/child", b"below p")
    client.upload_blob(f"in/{uuid.uuid4().hex}", b"plain")
    source = AzureSource(
        name, "in", account_url=blob_url, connection_string=connection_string, page_size=2
    )
    listed = [obj.name for obj in source.list()]
    assert "folder" not in listed and "dir/" not in listed
    assert {"folder/child", "held/", "p", "p/child"} <= set(listed)
    with pytest.raises(UnrestorableNamesError) as err:
        list(RestorableNames(source, "files").list())
    assert err.value.names == ["held/", "p"]
    assert "'held/' ends with '/' (a folder marker that holds data)" in str(err.value)
    assert "'p' is a file, and the folder of 'p/child'" in str(err.value)

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from migrator.errors import EXIT_USAGE, PlanError
from migrator.plan.model import (
    DatasetPlan,
    LocalDestinationPlan,
    LocalKeysPlan,
    LocalSourcePlan,
    Plan,
    load_plan,
)
from migrator.plan.schema import main as schema_main
from migrator.plan.schema import plan_json_schema, render_plan_json_schema
from migrator.sizes import GiB, KiB, MiB

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SHIPPED = ["demo.yaml", "govcloud.yaml", "azure-government.yaml"]
Change = Callable[[dict[str, Any]], object]  # edits a valid plan into a bad one


def plan_paths(plan: Plan) -> list[Path]:
    paths = [plan.state_dir, *(dataset.source.path for dataset in plan.datasets)]
    if isinstance(plan.keys, LocalKeysPlan):
        paths.append(plan.keys.kek_file)
    if isinstance(plan.destination, LocalDestinationPlan):
        paths.append(plan.destination.path)
    return paths


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


# --- the shipped manifests ----------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifest_loads_with_paths_under_its_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths follow the plan file, not the working folder
    plan = load_plan(MANIFESTS / name, check_sources=False)
    assert plan.plan_path == MANIFESTS / name
    for path in plan_paths(plan):
        assert path.is_absolute()
        assert path.is_relative_to(MANIFESTS)
    assert files_under(tmp_path) == set()


def test_demo_manifest_is_the_contract() -> None:
    plan = load_plan(MANIFESTS / "demo.yaml", check_sources=False)
    assert (plan.version, plan.name, plan.compression_level) == (1, "demo", 3)
    assert plan.state_dir == MANIFESTS / ".migrator/demo"
    assert plan.chunk_size == 16 * MiB
    assert plan.keys == LocalKeysPlan(
        provider="local", kek_file=MANIFESTS / ".migrator/demo/kek.key"
    )
    assert plan.destination.kind == "local"
    assert plan.destination.path == MANIFESTS / ".migrator/demo/bucket"
    assert plan.destination.prefix == "demo/"
    profiles, videos = plan.datasets
    assert (profiles.name, profiles.kind, profiles.format, profiles.key, profiles.shards) == (
        "user_profiles",
        "records",
        "jsonl",
        "user_id",
        64,
    )
    assert profiles.source.path == MANIFESTS / "data/user_profiles"
    assert (videos.name, videos.kind, videos.shards) == ("videos", "objects", 16)
    assert (videos.format, videos.key) == (None, None)
    assert videos.source.path == MANIFESTS / "data/videos"
    # the defaults the demo relies on
    assert plan.memory_budget == 512 * MiB
    assert plan.workers is None
    assert plan.upload_concurrency == 8
    assert profiles.csv_delimiter == ","
    assert profiles.include is None and videos.include is None
    assert videos.part_size == plan.chunk_size


def test_govcloud_manifest_targets_govcloud_s3_with_kms() -> None:
    plan = load_plan(MANIFESTS / "govcloud.yaml", check_sources=False)
    assert plan.destination.kind == "s3"
    assert plan.destination.region == "us-gov-west-1"
    assert plan.destination.bucket and plan.destination.prefix
    assert plan.keys.provider == "aws-kms"
    assert plan.keys.key_id is not None
    assert plan.keys.key_id.startswith("arn:aws-us-gov:kms:us-gov-west-1:")
    assert plan.chunk_size == 64 * MiB
    assert plan.dataset("user_profiles").shards == 4096
    assert all(d.source.path.is_relative_to(MANIFESTS / "exports") for d in plan.datasets)


def test_azure_manifest_targets_azure_government_with_key_vault() -> None:
    plan = load_plan(MANIFESTS / "azure-government.yaml", check_sources=False)
    assert plan.destination.kind == "azure"
    assert plan.destination.account_url is not None
    assert plan.destination.account_url.endswith(".blob.core.usgovcloudapi.net")
    assert plan.destination.bucket
    assert plan.keys.provider == "azure-keyvault"
    assert plan.keys.vault_url is not None
    assert ".vault.usgovcloudapi.net" in plan.keys.vault_url
    assert plan.keys.key_name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifests_hold_no_secrets(name: str) -> None:
    text = (MANIFESTS / name).read_text().lower()
    markers = ("accountkey=", "sharedaccesssignature", "sig=", "secret_access_key", "-----begin")
    for marker in markers:
        assert marker not in text


def test_check_sources_reports_every_missing_source(tmp_path: Path) -> None:
    # A copy: `make ui` generates the demo's data beside the shipped plan.
    (tmp_path / "demo.yaml").write_text((MANIFESTS / "demo.yaml").read_text(encoding="utf-8"))
    with pytest.raises(PlanError) as caught:
        load_plan(tmp_path / "demo.yaml")
    lines = str(caught.value).splitlines()
    assert caught.value.field == "datasets[0].source.path"
    assert "demo.yaml: datasets[0].source.path: " in lines[0]
    assert "demo.yaml: datasets[1].source.path: " in lines[1]
    assert all("does not exist" in line for line in lines)


# --- the JSON schema ----------------------------------------------------------------------


def test_schema_matches_the_committed_file() -> None:
    committed = (MANIFESTS / "plan.schema.json").read_text(encoding="utf-8")
    message = "manifests/plan.schema.json is stale: run `python -m migrator.plan.schema`"
    assert plan_json_schema() == json.loads(committed), message
    assert render_plan_json_schema() == committed, message


def test_schema_leaves_out_plan_path() -> None:
    assert "plan_path" not in json.dumps(plan_json_schema())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifests_satisfy_the_schema(name: str) -> None:
    import jsonschema  # in requirements.lock: a missing one fails, never skips

    document = yaml.safe_load((MANIFESTS / name).read_text(encoding="utf-8"))
    jsonschema.validate(document, plan_json_schema())


def test_schema_carries_the_per_kind_rules() -> None:
    import jsonschema  # in requirements.lock: a missing one fails, never skips

    schema = plan_json_schema()
    changes: list[Change] = [
        lambda p: p["datasets"][1].update(key="id"),
        lambda p: p["datasets"][0].pop("key"),
        lambda p: p.update(destination={"kind": "s3", "region": "us-gov-west-1"}),
        lambda p: p["keys"].pop("kek_file"),
    ]
    for change in changes:
        plan = valid_plan()
        jsonschema.validate(plan, schema)
        change(plan)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(plan, schema)


def test_schema_command_writes_then_checks(tmp_path: Path) -> None:
    target = tmp_path / "plan.schema.json"
    assert schema_main(["--check", "--path", str(target)]) == 1
    assert not target.exists()
    assert schema_main(["--path", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_plan_json_schema()
    assert schema_main(["--check", "--path", str(target)]) == 0
    target.write_text("{}\n", encoding="utf-8")
    assert schema_main(["--check", "--path", str(target)]) == 1


# --- bad plans ----------------------------------------------------------------------------


def valid_plan() -> dict[str, Any]:
    return {
        "version": 1,
        "name": "test",
        "state_dir": "state",
        "keys": {"provider": "local", "kek_file": "state/kek.key"},
        "destination": {"kind": "local", "path": "bucket", "prefix": "test/"},
        "datasets": [
            {
                "name": "profiles",
                "kind": "records",
                "format": "jsonl",
                "source": {"kind": "local", "path": "data/profiles"},
                "key": "user_id",
                "shards": 4,
            },
            {
                "name": "videos",
                "kind": "objects",
                "source": {"kind": "local", "path": "data/videos"},
                "shards": 2,
            },
        ],
    }


MISSING_FILE = "<missing file>"

BAD_PLANS: list[tuple[str, Change | str, str | None, str]] = [
    ("unknown field", lambda p: p["datasets"][1].update(shardz=3), "datasets[1].shardz",
     "unknown field 'shardz'"),
    ("wrong type", lambda p: p["datasets"][0].update(shards="lots"), "datasets[0].shards",
     "expected an integer (got 'lots')"),
    ("bool is not an int", lambda p: p.update(upload_concurrency=True), "upload_concurrency",
     "expected an integer"),
    ("missing source path", lambda p: p["datasets"][1]["source"].update(path="nowhere"),
     "datasets[1].source.path", "does not exist"),
    ("source is a file", lambda p: p["datasets"][0]["source"].update(path="plan.yaml"),
     "datasets[0].source.path", "is not a directory"),
    ("zero shards", lambda p: p["datasets"][1].update(shards=0), "datasets[1].shards",
     "must be at least 1 (got 0)"),
    ("too many shards", lambda p: p["datasets"][0].update(shards=65537), "datasets[0].shards",
     "must be at most 65536"),
    ("unreadable YAML", "version: 1\nname: [test\n", None, "invalid YAML at line 3, column 1"),
    ("duplicate YAML key", "version: 1\nversion: 1\n", None, "line 2, column 1: duplicate key"),
    ("not a mapping", "- version: 1\n", None, "top level must be a mapping"),
    ("empty file", "", None, "top level must be a mapping"),
    ("duplicate dataset names", lambda p: p["datasets"][1].update(name="profiles"),
     "datasets[1].name", "duplicate dataset name 'profiles'"),
    ("local keys without kek_file", lambda p: p["keys"].pop("kek_file"), "keys.kek_file",
     "required when provider is 'local'"),
    ("unknown key provider", lambda p: p["keys"].update(provider="gcp-kms"), "keys.provider",
     "must be 'local', 'aws-kms' or 'azure-keyvault' (got 'gcp-kms')"),
    ("kek_file with kms",
     lambda p: p["keys"].update(provider="aws-kms", key_id="alias/migration"),
     "keys.kek_file", "not used when provider is 'aws-kms' (only when it is 'local')"),
    ("kms without key_id", lambda p: p.update(keys={"provider": "aws-kms"}), "keys.key_id",
     "required when provider is 'aws-kms'"),
    ("s3 without bucket",
     lambda p: p.update(destination={"kind": "s3", "region": "us-gov-west-1"}),
     "destination.bucket", "required when kind is 's3'"),
    ("s3 without region", lambda p: p.update(destination={"kind": "s3", "bucket": "archive"}),
     "destination.region", "required when kind is 's3'"),
    ("azure without account_url",
     lambda p: p.update(destination={"kind": "azure", "bucket": "archive"}),
     "destination.account_url", "required when kind is 'azure'"),
    ("local destination without path", lambda p: p["destination"].pop("path"),
     "destination.path", "required when kind is 'local'"),
    ("region on a local destination", lambda p: p["destination"].update(region="us-gov-west-1"),
     "destination.region", "not used when kind is 'local'"),
    ("records without key", lambda p: p["datasets"][0].pop("key"), "datasets[0].key",
     "required when kind is 'records'"),
    ("records without format", lambda p: p["datasets"][0].pop("format"), "datasets[0].format",
     "required when kind is 'records'"),
    ("objects with key", lambda p: p["datasets"][1].update(key="id"), "datasets[1].key",
     "not used when kind is 'objects' (only when it is 'records')"),
    ("objects with format", lambda p: p["datasets"][1].update(format="jsonl"),
     "datasets[1].format", "not used when kind is 'objects'"),
    ("records with part_size", lambda p: p["datasets"][0].update(part_size="1MiB"),
     "datasets[0].part_size", "not used when kind is 'records'"),
    ("bad s3 bucket",
     lambda p: p.update(destination={"kind": "s3", "bucket": "B_1", "region": "us-gov-west-1"}),
     "destination.bucket", "must be an S3 bucket name"),
    ("csv_delimiter on jsonl", lambda p: p["datasets"][0].update(csv_delimiter=";"),
     "datasets[0].csv_delimiter", "only used when format is 'csv'"),
    ("bad name", lambda p: p.update(name="Test Plan"), "name", "becomes part of object keys"),
    ("bad dataset name", lambda p: p["datasets"][0].update(name="a/b"), "datasets[0].name",
     "got 'a/b'"),
    ("memory budget too small", lambda p: p.update(memory_budget="16MiB"), "memory_budget",
     "plaintext and its ciphertext"),
    ("memory budget below a part", lambda p: p["datasets"][1].update(part_size="512MiB"),
     "memory_budget", "twice datasets[1].part_size"),
    ("chunk too small", lambda p: p.update(chunk_size="16KiB"), "chunk_size",
     "between 64.0 KiB and 1.0 GiB"),
    ("size junk", lambda p: p.update(chunk_size="big"), "chunk_size", "not a size: 'big'"),
    ("compression level", lambda p: p.update(compression_level=23), "compression_level",
     "at most 22"),
    ("version 2", lambda p: p.update(version=2), "version", "must be 1 (got 2)"),
    ("no datasets", lambda p: p.update(datasets=[]), "datasets", "at least one dataset"),
    ("include escapes source", lambda p: p["datasets"][1].update(include=["ok", "../x"]),
     "datasets[1].include[1]", "without '..'"),
    ("absolute prefix", lambda p: p["destination"].update(prefix="/test"), "destination.prefix",
     "leading '/'"),
    ("missing file", MISSING_FILE, None, "cannot read plan"),
]  # fmt: skip


@pytest.fixture
def plan_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data" / "profiles").mkdir(parents=True)
    (tmp_path / "data" / "videos").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_plan(folder: Path, plan: dict[str, Any] | str) -> Path:
    text = plan if isinstance(plan, str) else yaml.safe_dump(plan, sort_keys=False)
    (folder / "plan.yaml").write_text(text, encoding="utf-8")
    return folder / "plan.yaml"


def test_the_valid_plan_loads(plan_folder: Path) -> None:
    plan = load_plan(write_plan(plan_folder, valid_plan()))
    assert plan.dataset("videos").source.path == plan_folder / "data" / "videos"


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [case[1:] for case in BAD_PLANS],
    ids=[case[0] for case in BAD_PLANS],
)
def test_bad_plan_is_one_plan_error_naming_file_and_field(
    plan_folder: Path, change: Change | str, field: str | None, fragment: str
) -> None:
    if change != MISSING_FILE:
        plan: dict[str, Any] | str = change if isinstance(change, str) else valid_plan()
        if not isinstance(change, str):
            assert isinstance(plan, dict)
            change(plan)
        write_plan(plan_folder, plan)
    before = files_under(plan_folder)

    with pytest.raises(PlanError) as caught:
        load_plan("plan.yaml")

    message = str(caught.value)
    assert message.startswith(f"plan.yaml: {field}: " if field else "plan.yaml: "), message
    assert fragment in message
    assert caught.value.field == field
    assert caught.value.path == "plan.yaml"
    assert caught.value.exit_code == EXIT_USAGE
    assert files_under(plan_folder) == before


def test_unreadable_file(plan_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plan(plan_folder, valid_plan())

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    # Simulated: a chmod 000 file is still readable when the tests run as root.
    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(PlanError, match=r"^plan\.yaml: cannot read plan: Permission denied$"):
        load_plan("plan.yaml")


def test_folder_instead_of_file(plan_folder: Path) -> None:
    (plan_folder / "plans.yaml").mkdir()
    with pytest.raises(PlanError, match=r"^plans\.yaml: cannot read plan"):
        load_plan("plans.yaml")


def test_non_utf8_file(plan_folder: Path) -> None:
    (plan_folder / "plan.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(PlanError, match=r"^plan\.yaml: not UTF-8"):
        load_plan("plan.yaml")


def test_every_validation_error_is_reported_one_per_line(plan_folder: Path) -> None:
    plan = valid_plan()
    plan["compression_level"] = 0
    plan["datasets"][0]["shards"] = 0
    plan["datasets"][1]["key"] = "id"
    write_plan(plan_folder, plan)
    with pytest.raises(PlanError) as caught:
        load_plan("plan.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        "plan.yaml: compression_level: must be at least 1 (got 0)",
        "plan.yaml: datasets[0].shards: must be at least 1 (got 0)",
        "plan.yaml: datasets[1].key: not used when kind is 'objects' (only when it is 'records')",
    ]
    assert caught.value.field == "compression_level"


def test_unknown_field_suggests_the_near_name(plan_folder: Path) -> None:
    plan = valid_plan()
    plan["chunk_sise"] = "16MiB"
    write_plan(plan_folder, plan)
    with pytest.raises(PlanError, match=r"unknown field 'chunk_sise' \(did you mean 'chunk_size'"):
        load_plan("plan.yaml")


# --- the model ----------------------------------------------------------------------------


def test_sizes_and_defaults(plan_folder: Path) -> None:
    plan = valid_plan()
    plan.update(chunk_size=64 * KiB, memory_budget="1.5 GiB", workers=2, upload_concurrency=4)
    plan["datasets"][1]["part_size"] = "64mib"
    plan["datasets"][1]["include"] = ["*.mp4", "2024/**/*.mov"]
    plan["datasets"][0].update(format="csv", csv_delimiter="|")
    loaded = load_plan(write_plan(plan_folder, plan))
    assert (loaded.chunk_size, loaded.memory_budget) == (64 * KiB, 3 * GiB // 2)
    assert (loaded.workers, loaded.upload_concurrency) == (2, 4)
    videos = loaded.dataset("videos")
    assert videos.part_size == 64 * MiB
    assert videos.include == ("*.mp4", "2024/**/*.mov")
    profiles = loaded.dataset("profiles")
    assert (profiles.format, profiles.csv_delimiter, profiles.part_size) == ("csv", "|", None)
    assert profiles.csv_delimiter == "|"


def test_part_size_defaults_to_the_plans_chunk_size(plan_folder: Path) -> None:
    plan = valid_plan()
    plan["chunk_size"] = "8MiB"
    videos = load_plan(write_plan(plan_folder, plan)).dataset("videos")
    assert videos.part_size == 8 * MiB
    plan["datasets"][1]["part_size"] = None  # written out as null: still the default
    assert load_plan(write_plan(plan_folder, plan)).dataset("videos").part_size == 8 * MiB


def test_prefix_is_stored_with_one_trailing_slash(plan_folder: Path) -> None:
    plan = valid_plan()
    plan["destination"]["prefix"] = "migration/v1"
    assert load_plan(write_plan(plan_folder, plan)).destination.prefix == "migration/v1/"
    plan["destination"]["prefix"] = ""
    assert load_plan(write_plan(plan_folder, plan)).destination.prefix == ""


def test_absolute_paths_are_kept(
    plan_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    plan = valid_plan()
    plan["state_dir"] = str(elsewhere / "state")
    plan["datasets"][0]["source"]["path"] = "./data/../data/profiles"
    loaded = load_plan(write_plan(plan_folder, plan))
    assert loaded.state_dir == elsewhere / "state"
    assert loaded.dataset("profiles").source.path == plan_folder / "data" / "profiles"


def test_plan_is_frozen(plan_folder: Path) -> None:
    plan = load_plan(write_plan(plan_folder, valid_plan()))
    with pytest.raises(ValidationError):
        plan.name = "other"  # type: ignore[misc]
    with pytest.raises(KeyError):
        plan.dataset("nope")


def test_model_built_in_code_resolves_against_the_working_folder(plan_folder: Path) -> None:
    plan = Plan.model_validate(copy.deepcopy(valid_plan()))
    assert plan.plan_path is None
    assert plan.state_dir == Path.cwd() / "state"


def test_sections_validate_on_their_own() -> None:
    source = LocalSourcePlan(kind="local", path=Path("/exports/videos"))
    videos = DatasetPlan(name="videos", kind="objects", source=source, shards=1)
    assert videos.part_size is None  # only a Plan knows its chunk_size
    with pytest.raises(ValidationError) as caught:
        DatasetPlan.model_validate({"name": "p", "kind": "records", "source": source, "shards": 1})
    assert [error["loc"] for error in caught.value.errors()] == [("format",), ("key",)]

"""The `migrator` command line as users meet it: exit codes, one-line errors, output, secrets."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from migrator.keys.keyring import load_data_key
from migrator.keys.local import KEK_HEADER, LocalKeyProvider
from migrator.plan.model import load_plan
from migrator.stores.local import LocalStore
from tests.planfiles import (
    METADATA,
    PROFILES,
    VIDEOS,
    run_cli,
    write_metadata_csv,
    write_objects,
    write_plan,
    write_profiles,
)


def snapshot(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_profiles(tmp_path / "data/profiles", 300)
    write_metadata_csv(tmp_path / "data/metadata", 30)
    write_objects(tmp_path / "data/videos", [0, 5000, 70_000])
    write_plan(tmp_path, datasets=PROFILES + METADATA + VIDEOS)
    return tmp_path


# --- bad plans ----------------------------------------------------------------------------

GOOD = (PROFILES + METADATA + VIDEOS).splitlines(keepends=True)

BAD_PLANS = {
    # name: (datasets YAML, extra top-level YAML, field path the error must name)
    "unknown-field": (
        PROFILES.replace("shards: 4", "shards: 4, colour: blue"),
        "",
        "datasets[0].colour",
    ),
    "unknown-top-level-field": (PROFILES, "chunk_sise: 1MiB", "chunk_sise"),
    "wrong-type": (PROFILES.replace("shards: 4", "shards: four"), "", "datasets[0].shards"),
    "wrong-type-nested": (
        METADATA.replace("{kind: local, path: data/metadata}", "[data/metadata]"),
        "",
        "datasets[0].source",
    ),
    "missing-source-folder": (
        PROFILES.replace("data/profiles", "data/nowhere"),
        "",
        "datasets[0].source.path",
    ),
    "zero-shards": (
        PROFILES + METADATA.replace("shards: 3", "shards: 0"),
        "",
        "datasets[1].shards",
    ),
    "missing-field": (PROFILES.replace("key: user_id, ", ""), "", "datasets[0].key"),
}


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_bad_plan_is_one_line_exit_2_and_writes_nothing(
    site: Path, command: str, case: str
) -> None:
    datasets, extra, field = BAD_PLANS[case]
    write_plan(site, datasets=datasets, extra=extra)
    before = snapshot(site)
    done = run_cli(command, "plan.yaml", cwd=site)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"migrator: error: plan.yaml: {field}: "), line
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert snapshot(site) == before
    assert not (site / "state").exists()
    assert not (site / "dest").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nname: [unclosed\n", "invalid YAML at line 3"),
        ("version: 1\n  name: bad indent\n", "invalid YAML at line 2"),
        ("version: 1\nname: a\nname: b\n", "duplicate key 'name'"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("", "the top level must be a mapping of fields (got an empty file)"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_unreadable_yaml(site: Path, command: str, text: str, message: str) -> None:
    (site / "plan.yaml").write_text(text)
    before = snapshot(site)
    done = run_cli(command, "plan.yaml", cwd=site)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("migrator: error: plan.yaml: ")
    assert message in line
    assert snapshot(site) == before


@pytest.mark.parametrize("command", ["status", "verify", "restore"])
def test_bad_plan_for_reading_commands(site: Path, command: str) -> None:
    write_plan(site, datasets=PROFILES.replace("format: jsonl", "format: xml"))
    before = snapshot(site)
    args = ["--dataset", "profiles", "--out", "out"] if command == "restore" else []
    done = run_cli(command, "plan.yaml", *args, cwd=site)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("migrator: error: plan.yaml: datasets[0].format: ")
    assert snapshot(site) == before


def test_plan_that_is_not_utf8_or_absent(site: Path) -> None:
    (site / "plan.yaml").write_bytes(b"version: 1\nname: \xff\xfe\n")
    done = run_cli("run", "plan.yaml", cwd=site)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert "plan.yaml: not UTF-8 text" in done.stderr

    done = run_cli("plan", "missing.yaml", cwd=site)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("migrator: error: missing.yaml: cannot read plan")


def test_debug_shows_a_traceback(site: Path) -> None:
    write_plan(site, datasets=PROFILES.replace("shards: 4", "shards: 0"))
    done = run_cli("--debug", "run", "plan.yaml", cwd=site)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "PlanError" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("migrator: error: plan.yaml: ")


def test_debug_shows_a_traceback_for_a_runtime_failure(site: Path) -> None:
    write_plan(site, datasets=PROFILES)
    (site / "kek.key").unlink()
    plain = run_cli("run", "plan.yaml", cwd=site)
    assert plain.returncode == 3
    (line,) = plain.stderr.splitlines()
    assert "KEK file not found" in line
    debug = run_cli("--debug", "run", "plan.yaml", cwd=site)
    assert debug.returncode == 3
    assert "Traceback (most recent call last)" in debug.stderr
    assert "KeyProviderError" in debug.stderr


# --- keys init ----------------------------------------------------------------------------


def test_keys_init_creates_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    done = run_cli("keys", "init", "keys/kek.key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "keys" / "kek.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    assert content.startswith(KEK_HEADER)
    assert "created KEK keys/kek.key (id " in done.stdout
    secret = content[len(KEK_HEADER) :].strip().decode()
    assert secret not in done.stdout + done.stderr

    again = run_cli("keys", "init", "keys/kek.key", cwd=tmp_path)
    assert again.returncode == 2
    (line,) = again.stderr.splitlines()
    assert "already exists" in line and "keys/kek.key" in line
    assert path.read_bytes() == content
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- plan, status, run --------------------------------------------------------------------


def test_plan_prints_datasets_shards_and_estimates(site: Path) -> None:
    done = run_cli("plan", "plan.yaml", cwd=site)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "plan test: valid" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert set(rows) >= {"profiles", "metadata", "videos"}
    cells = {name: [c.strip() for c in row.split("│")[1:-1]] for name, row in rows.items()}
    assert cells["profiles"][:4] == ["profiles", "records", "4", "3"]
    assert cells["metadata"][:4] == ["metadata", "records", "3", "2"]
    assert cells["videos"][:5] == ["videos", "objects", "3", "3", "73.2 KiB"]
    assert cells["videos"][5] == "4"  # 0 B → 1 part, 5000 B → 1, 70,000 B → 2 of 64KiB
    assert "destination local; chunk size 64.0 KiB; zstd level 3; memory budget 2.0 MiB" in out
    assert not (site / "state").exists()


def test_plan_json(site: Path) -> None:
    done = run_cli("plan", "plan.yaml", "--json", cwd=site)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    by_name = {d["dataset"]: d for d in doc}
    assert by_name["videos"]["shards"] == 3
    assert by_name["videos"]["files"] == 3
    assert by_name["videos"]["chunks"] == 4
    assert by_name["profiles"]["kind"] == "records"


def test_status_before_and_after_a_run(site: Path) -> None:
    before = run_cli("status", "plan.yaml", "--json", cwd=site)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout) == {
        "plan": "test",
        "started": False,
        "datasets": [],
        "integrity_failed": [],
    }
    text = run_cli("status", "plan.yaml", cwd=site)
    assert text.returncode == 0 and "not started" in text.stdout
    assert not (site / "state").exists()  # status only reads

    done = run_cli("run", "plan.yaml", cwd=site)
    assert done.returncode == 0, done.stderr
    after = run_cli("status", "plan.yaml", "--json", cwd=site)
    assert after.returncode == 0, after.stderr
    doc = json.loads(after.stdout)
    assert doc["plan"] == "test" and doc["started"] is True
    by_name = {d["name"]: d for d in doc["datasets"]}
    assert [d["name"] for d in doc["datasets"]] == ["profiles", "metadata", "videos"]
    assert by_name["profiles"]["records"] == 300
    assert by_name["metadata"]["records"] == 30
    assert by_name["videos"]["records"] == 0
    assert by_name["videos"]["chunks"] == 4
    assert by_name["videos"]["plain_bytes"] == 75_000
    for name, shards in (("profiles", 4), ("metadata", 3), ("videos", 3)):
        ds = by_name[name]
        assert ds["shards"] == ds["shards_complete"] == shards
        assert [s["shard"] for s in ds["per_shard"]] == list(range(shards))
        assert {s["status"] for s in ds["per_shard"]} == {"complete"}
        assert ds["chunks"] == sum(s["chunks"] for s in ds["per_shard"])
        assert ds["stored_bytes"] > 0

    table = run_cli("status", "plan.yaml", cwd=site)
    assert table.returncode == 0
    assert "profiles generation 1: 4/4 shards complete" in table.stdout
    assert "videos generation 1: 3/3 shards complete" in table.stdout
    assert table.stdout.count("committed") == 3  # each dataset's bulk generation
    for ds in doc["datasets"]:
        assert ds["generation"] == 1
        ((g,),) = [ds["generations"]]
        assert (g["generation"], g["kind"], g["status"]) == (1, "bulk", "committed")

    # A second run is a sync: status shows the new generation.
    assert run_cli("run", "plan.yaml", cwd=site).returncode == 0
    doc = json.loads(run_cli("status", "plan.yaml", "--json", cwd=site).stdout)
    for ds in doc["datasets"]:
        assert ds["generation"] == 2
        assert [g["kind"] for g in ds["generations"]] == ["bulk", "sync"]
        assert ds["generations"][1]["changed_records"] == 0


def test_run_unknown_dataset_is_a_usage_error(site: Path) -> None:
    done = run_cli("run", "plan.yaml", "--dataset", "nope", cwd=site)
    assert done.returncode == 2
    assert "'nope'" in done.stderr and "profiles" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (site / "state").exists()
    assert not (site / "dest").exists()
    other = run_cli("verify", "plan.yaml", "--dataset", "nope", cwd=site)
    assert other.returncode == 2
    assert "'nope'" in other.stderr


def test_run_one_dataset_only(site: Path) -> None:
    done = run_cli("run", "plan.yaml", "--dataset", "metadata", cwd=site)
    assert done.returncode == 0, done.stderr
    doc = json.loads(run_cli("status", "plan.yaml", "--json", cwd=site).stdout)
    complete = {d["name"]: d["shards_complete"] for d in doc["datasets"]}
    assert complete == {"profiles": 0, "metadata": 3, "videos": 0}
    checked = run_cli("verify", "plan.yaml", "--dataset", "metadata", "--json", cwd=site)
    assert checked.returncode == 0, checked.stdout
    missing = run_cli("verify", "plan.yaml", "--json", cwd=site)
    assert missing.returncode == 1
    errors = {(p["dataset"], p["error"]) for p in json.loads(missing.stdout)["problems"]}
    assert errors == {("profiles", "MissingObjectError"), ("videos", "MissingObjectError")}


def test_restore_needs_a_known_dataset(site: Path) -> None:
    assert run_cli("run", "plan.yaml", cwd=site).returncode == 0
    done = run_cli("restore", "plan.yaml", "--dataset", "nope", "--out", "out", cwd=site)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "nope" in line
    assert not (site / "out").exists()


# --- secrets ------------------------------------------------------------------------------


def test_no_key_material_in_any_output(site: Path) -> None:
    outputs = []
    for args in (
        ("plan", "plan.yaml"),
        ("status", "plan.yaml", "--json"),
        ("run", "plan.yaml"),
        ("run", "plan.yaml"),
        ("status", "plan.yaml"),
        ("status", "plan.yaml", "--json"),
        ("verify", "plan.yaml"),
        ("verify", "plan.yaml", "--json"),
        ("--debug", "verify", "plan.yaml", "--sample", "0.5"),
        ("restore", "plan.yaml", "--dataset", "videos", "--out", "out"),
    ):
        done = run_cli(*args, cwd=site)
        assert done.returncode == 0, (args, done.stderr)
        outputs.append(done.stdout + done.stderr)
    # A failing command with --debug, whose traceback passes through the key provider.
    (site / "dest/t/videos/_keys/datakey.json").write_bytes(b'{"format": 1}')
    failed = run_cli(
        "--debug", "restore", "plan.yaml", "--dataset", "videos", "--out", "o2", cwd=site
    )
    assert failed.returncode == 4
    outputs.append(failed.stdout + failed.stderr)
    text = "\n".join(outputs)

    kek_b64 = (site / "kek.key").read_bytes()[len(KEK_HEADER) :].strip()
    kek = base64.b64decode(kek_b64)
    secrets = [kek_b64.decode(), kek.hex(), kek_b64.decode()[:16]]
    plan = load_plan(site / "plan.yaml")
    provider = LocalKeyProvider(site / "kek.key")
    store = LocalStore(site / "dest" / "t")
    for name in ("profiles", "metadata"):
        key = load_data_key(store, provider, plan.name, name).secret
        secrets += [key.hex(), base64.b64encode(key).decode()]
    for secret in secrets:
        assert secret not in text
    # Nor anywhere at the destination or in the state, in any encoding.
    for folder in (site / "dest", site / "state"):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert kek not in data, path
                for secret in secrets:
                    assert secret.encode() not in data, path

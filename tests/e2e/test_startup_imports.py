"""What a command imports before it does any work: every `migrator run` (and each Dagster shard
run) pays for it. Heavy modules load only where used: cloud SDKs for plans that name a cloud,
Alembic only to create or upgrade a state schema, the plan and state layers not for `--help`.

Each case runs the command in a fresh interpreter (this process has imported everything) and
reads the modules it ended with; an eager import added anywhere on the path fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.planfiles import VIDEOS, write_objects, write_plan

# Runs the command as `python -m migrator` does, then writes the modules it loaded to argv[1].
PROBE = """\
import json, sys
from migrator.cli.app import main
out, args = sys.argv[1], sys.argv[2:]
try:
    main(args)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as fh:
    json.dump({"exit": code, "modules": sorted(sys.modules)}, fh)
"""

CLOUD_SDKS = ("boto3", "botocore", "azure", "urllib3")  # never for a local plan
SCHEMA_TOOLS = ("alembic", "mako", "sqlalchemy.dialects.postgresql")  # creating a schema only
PLAN_AND_STATE = ("pydantic", "yaml", "sqlalchemy", "cryptography", "rich.console")


def loaded(cwd: Path, *args: str) -> set[str]:
    """The modules `migrator ARGS` imported, once it exited 0."""
    out = cwd / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = json.loads(out.read_text())
    assert found["exit"] == 0, done.stderr
    return set(found["modules"])


def present(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The packages (or any of their submodules) among modules."""
    return [p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules)]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write_objects(tmp_path / "data" / "videos", [3000, 70_000])
    write_plan(tmp_path, datasets=VIDEOS)
    return tmp_path


def test_help_loads_neither_the_plan_nor_the_state_layer(tmp_path: Path) -> None:
    modules = loaded(tmp_path, "--help")
    assert present(modules, PLAN_AND_STATE + SCHEMA_TOOLS + CLOUD_SDKS) == []


def test_plan_is_read_without_the_state_store(site: Path) -> None:
    modules = loaded(site, "plan", "plan.yaml")
    assert "migrator.plan.model" in modules
    assert present(modules, ("sqlalchemy", *SCHEMA_TOOLS, *CLOUD_SDKS)) == []


def test_local_run_loads_alembic_only_to_create_the_schema(site: Path) -> None:
    first = loaded(site, "run", "plan.yaml")
    assert present(first, CLOUD_SDKS) == []
    assert "alembic" in first  # the probe sees lazy imports: this run created the schema

    rerun = loaded(site, "run", "plan.yaml")
    assert "migrator.write.run" in rerun
    assert present(rerun, SCHEMA_TOOLS + CLOUD_SDKS) == []

    status = loaded(site, "status", "plan.yaml")
    assert "migrator.state.db" in status
    assert present(status, SCHEMA_TOOLS + CLOUD_SDKS) == []

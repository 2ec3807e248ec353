"""A sync as a deployment runs it: the source sensor and the routed sensor ticked by the daemon,
the sync fanned out to router runs and then shard-batch runs, each run in a process of its own
and its steps in subprocesses (MIGRATOR_RUN_EXECUTOR=multiprocess), Dagster's storage and migrator's
state store in PostgreSQL. The bulk is copied first (migrator.run), then the source changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)

import migrator
from migrator.plan.model import load_plan
from tests.pgserver import PostgresServer
from tests.pipelines import PROFILES, change_profiles, source_records
from tests.pipelines.deployment import code_server, daemon, dagster_cli, wait_for_runs
from tests.planfiles import restored_records, write_plan, write_profiles

pytestmark = pytest.mark.integration

PROFILES_ONLY = """\
  - {name: user_profiles, kind: records, format: jsonl,
     source: {kind: local, path: data/user_profiles}, key: user_id, shards: 4}
"""
ROUTERS, SHARDS_PER_RUN = 2, 2
RUNS_PER_SYNC = ROUTERS + 4 // SHARDS_PER_RUN


@pytest.fixture
def deployment(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, str]]:
    """The plan and its code server: production, state in PostgreSQL, 2 routers, 2 shards a
    run."""
    write_profiles(tmp_path / "data" / "user_profiles", PROFILES, files=3)
    plan = write_plan(tmp_path, datasets=PROFILES_ONLY)
    state_url = postgres_server.create_database()
    for name, value in {
        "MIGRATOR_PLAN": str(plan),
        "MIGRATOR_DEPLOYMENT": "production",
        "MIGRATOR_STATE_URL": state_url,
        "MIGRATOR_ROUTERS": str(ROUTERS),
        "MIGRATOR_SHARDS_PER_RUN": str(SHARDS_PER_RUN),
        "MIGRATOR_RUN_EXECUTOR": "multiprocess",  # the default, in process: the backfill test
    }.items():
        monkeypatch.setenv(name, value)
    with code_server(tmp_path):
        yield plan, state_url


def committed(plan: Path) -> list[int]:
    return [g.generation for g in migrator.progress(load_plan(plan)).committed("user_profiles")]


def routers_then_shards(instance: DagsterInstance, runs: list[DagsterRun]) -> None:
    """One sync: its routers, then its shard runs, started once a router had ended saying
    routing is complete (every router says so: each waits for the others' tasks)."""
    (sync,) = {r.tags["migrator/sync"] for r in runs}
    records = instance.get_run_records(RunsFilter(tags={"migrator/sync": sync}))
    routers = [r for r in records if r.dagster_run.job_name == "route_user_profiles"]
    shards = [r for r in records if r.dagster_run.job_name == "incremental_sync_user_profiles"]
    assert len(routers) == ROUTERS and len(shards) == 4 // SHARDS_PER_RUN
    assert min(r.end_time or 0 for r in routers) <= min(r.start_time or 0 for r in shards)


def test_a_sync_runs_as_router_runs_then_shard_runs_under_the_daemon(
    tmp_path: Path, dagster_postgres_instance: DagsterInstance, deployment: tuple[Path, str]
) -> None:
    plan, _ = deployment
    instance = dagster_postgres_instance
    migrator.run(load_plan(plan))  # the bulk
    change_profiles(tmp_path / "data" / "user_profiles")
    started = dagster_cli(tmp_path, "sensor", "start", "-w", "workspace.yaml",
                          "user_profiles_source_changed")  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr

    with daemon(tmp_path):
        # The sensor's first tick has no cursor: the source counts as changed, a sync starts.
        runs = wait_for_runs(instance, RUNS_PER_SYNC, also=lambda: committed(plan) == [1, 2])

    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * len(runs), [
        (r.job_name, r.tags.get("dagster/partition"), r.status) for r in runs
    ]
    routers_then_shards(instance, runs)
    # Routing is a step of its own: each router partition materialized once.
    routing = instance.fetch_materializations(
        AssetKey(["test", "user_profiles_routing"]), limit=100
    ).records
    events = [r.asset_materialization for r in routing if r.asset_materialization is not None]
    seen = sorted(
        (e.partition, e.metadata["generation"].value, e.metadata["files_to_route"].value)
        for e in events
    )
    # Both routers worked generation 2, whose table holds the changed file and the new one.
    assert seen == [("router-0", 2, 2), ("router-1", 2, 2)]
    steps = {
        (run.job_name, event.step_key)
        for run in runs
        for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS)
    }
    assert ("route_user_profiles", "test__user_profiles_routing") in steps
    assert ("incremental_sync_user_profiles", "test__user_profiles") in steps
    for run in runs:  # each run's steps in processes of their own: the multiprocess executor
        started_steps = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_WORKER_STARTED)
        assert started_steps, f"run {run.run_id} did not run its steps in subprocesses"

    out = tmp_path / "out"
    migrator.restore(load_plan(plan), "user_profiles", out)
    assert restored_records(out) == source_records(tmp_path / "data" / "user_profiles")

"""A multi-shard backfill as a deployment runs it: a code server, `dagster job backfill` over
every shard partition, the default run launcher starting one run per partition, each run's
steps in that run's process (the default executor), Dagster's run and event storage in
PostgreSQL, and migrator's state store in PostgreSQL too (MIGRATOR_STATE_URL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
)

from tests.pgserver import PostgresServer
from tests.pipelines import PROFILES, write_demo_shaped_plan
from tests.pipelines.deployment import code_server, daemon, dagster_cli, wait_for_runs
from tests.planfiles import restored_records, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def deployed(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[tuple[int, str]]:
    """The code server for the plan, production deployment, state in PostgreSQL."""
    write_demo_shaped_plan(tmp_path)
    state_url = postgres_server.create_database()
    os.environ["MIGRATOR_PLAN"] = str(tmp_path / "plan.yaml")
    os.environ["MIGRATOR_DEPLOYMENT"] = "production"
    os.environ["MIGRATOR_STATE_URL"] = state_url
    try:
        with code_server(tmp_path) as port:
            yield port, state_url
    finally:
        for name in ("MIGRATOR_PLAN", "MIGRATOR_DEPLOYMENT", "MIGRATOR_STATE_URL"):
            os.environ.pop(name, None)


def test_a_backfill_of_every_shard_runs_on_postgres_one_process_a_run(
    tmp_path: Path, dagster_postgres_instance: DagsterInstance, deployed: tuple[int, str]
) -> None:
    port, state_url = deployed
    instance = dagster_postgres_instance
    for job in ("full_migration_user_profiles", "full_migration_videos"):
        launched = dagster_cli(
            tmp_path, "job", "backfill", "--grpc-port", str(port), "-j", job, "--all", "all",
            "--noprompt",
        )  # fmt: skip
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert "Launched backfill" in launched.stdout
    # The runs wait in Dagster's queue; the daemon dequeues and launches them, one process each.
    with daemon(tmp_path):
        runs = wait_for_runs(instance, 7)

    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * 7, [
        (r.tags.get("dagster/partition"), r.status) for r in runs
    ]
    partitions = sorted(
        (r.job_name, r.tags["dagster/partition"]) for r in runs if "dagster/backfill" in r.tags
    )
    assert partitions == sorted(
        [("full_migration_user_profiles", str(s)) for s in range(4)]
        + [("full_migration_videos", str(s)) for s in range(3)]
    )
    # Each run's steps ran in the run's own process (pipelines/execution.py), none in another.
    for run in runs:
        started = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_WORKER_STARTED)
        assert not started, f"run {run.run_id} ran its steps in subprocesses"
        engine = instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        assert any("Executing steps in process" in (e.message or "") for e in engine), run.run_id
    # Every partition's materialization is recorded in PostgreSQL.
    for asset, shards in (("user_profiles", 4), ("videos", 3)):
        found = instance.fetch_materializations(AssetKey(["test", asset]), limit=100).records
        assert sorted(r.partition_key or "" for r in found) == [str(s) for s in range(shards)]
    env = {"MIGRATOR_STATE_URL": state_url}
    status = run_cli("status", "plan.yaml", "--json", cwd=tmp_path, env=env)
    assert status.stdout.count('"status": "committed"') == 2, status.stdout
    verify = run_cli("verify", "plan.yaml", cwd=tmp_path, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    out = tmp_path / "out"
    restored = run_cli("restore", "plan.yaml", "--dataset", "user_profiles", "--out", out,
                       cwd=tmp_path)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert sum(restored_records(out).values()) == PROFILES

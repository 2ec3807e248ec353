"""The gate cannot stay green over a damaged chunk: one stored chunk of user_profiles is
corrupted, the integrity checks fail naming it, `cutover_readiness` says "not ready" naming the
shard (a check result, not a crashed run); the repair job re-sends the chunk from the source and
the gate passes again. Through Dagster's own API, as the UI launches each job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

import migrator
from migrator.repository.names import manifest_key
from pipelines import build_definitions
from pipelines.checks import READBACK_CHECK
from tests.pipelines import change_profiles, write_demo_shaped_plan
from tests.pipelines.test_assets import instance, metadata, migrate_everything  # noqa: F401
from tests.pipelines.test_cutover_readiness import NODE, gate, verdict
from tests.planfiles import flip_bit

DEST = Path("dest/t")


def launch(defs: Definitions, name: str, config: dict[str, Any], inst: DagsterInstance) -> Any:
    job = defs.resolve_job_def(name)
    op = f"{name}_op"
    return job.execute_in_process(
        run_config={"ops": {op: {"config": config}}}, instance=inst, raise_on_error=False
    )


def not_ready_rows(result: ExecuteInProcessResult) -> str:
    return str(verdict(result).metadata["not_ready"].value)


def test_a_corrupted_chunk_closes_the_gate_naming_its_shard_until_the_repair_job_restores_it(
    tmp_path: Path,
    instance: DagsterInstance,  # noqa: F811
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    migrate_everything(defs, instance)
    ready = gate(defs, instance)
    assert ready.success and verdict(ready).passed

    shard = 2
    chunk = tmp_path / DEST / f"user_profiles/g000001/s{shard:05d}/r/00000000.mgc"
    flip_bit(chunk, -20)  # inside the ciphertext
    bad_key = chunk.relative_to(tmp_path / DEST).as_posix()

    # The checks alone, without migrating: they fail once, naming the chunk, and say how to fix.
    checked = launch(defs, "verify_user_profiles", {"sample": 1.0}, instance)
    assert not checked.success
    verdicts = [c for c in checked.get_asset_check_evaluations() if not c.passed]
    assert {(c.partition, c.check_name) for c in verdicts} == {(str(shard), READBACK_CHECK)}
    failure = next(e for e in checked.all_events if e.event_type_value == "STEP_FAILURE")
    headline = str(failure.step_failure_data.user_failure_data.description)
    assert f"shard {shard}: TamperedError: {bad_key}" in headline and "REPAIR.md" in headline
    retried = [e for e in checked.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried == []

    closed = gate(defs, instance)
    assert closed.success  # "not ready" is the gate's answer, not a crash
    assert not verdict(closed).passed
    assert metadata(closed, NODE)["ready"] is False
    rows = not_ready_rows(closed)
    assert f"| user_profiles | {shard} | integrity check failed" in rows, rows
    assert bad_key in rows and "migrator repair" in rows
    (bad,) = verdict(closed).metadata["mismatched"].value  # type: ignore[attr-defined]
    assert (bad["dataset"], bad["shard"]) == ("user_profiles", shard)
    # Digests alone would have said "ready": the manifests still agree with the source.
    assert bad["source_digest"] == bad["destination_digest"]

    # No shards named: the job repairs those whose latest check failed, and re-checks them.
    repaired = launch(defs, "repair_user_profiles", {}, instance)
    assert repaired.success
    verdicts = repaired.get_asset_check_evaluations()
    assert {(c.partition, c.passed) for c in verdicts} == {(str(shard), True)}

    reopened = gate(defs, instance)
    assert verdict(reopened).passed, not_ready_rows(reopened)
    assert migrator.verify(migrator.load_plan(tmp_path / "plan.yaml"), sample=1.0).ok


def test_sync_now_syncs_in_one_run_reports_each_written_shard_and_checks_it(
    tmp_path: Path,
    instance: DagsterInstance,  # noqa: F811
) -> None:
    defs = build_definitions(write_demo_shaped_plan(tmp_path), "production")
    migrate_everything(defs, instance)
    change_profiles(tmp_path / "data" / "user_profiles")

    result = launch(defs, "sync_now_user_profiles", {"sample": 1.0}, instance)

    assert result.success
    written = result.asset_materializations_for_node("sync_now_user_profiles_op")
    assert written, "each shard the sync wrote is reported on its partition"
    own = {int(m.partition or -1): {k: v.value for k, v in m.metadata.items()} for m in written}
    for shard, numbers in own.items():
        assert numbers["shard"] == shard and numbers["generation"] == 2
        assert Path(str(numbers["manifest_uri"]).removeprefix("local:")).is_file()
        assert str(numbers["manifest_uri"]).endswith(manifest_key("user_profiles", 2, shard))
    assert sum(int(n["removed_or_replaced"]) for n in own.values()) == 2  # an edit, a removal
    checks = result.get_asset_check_evaluations()
    assert {c.partition for c in checks} == {str(s) for s in own} and all(c.passed for c in checks)
    assert verdict(gate(defs, instance)).passed

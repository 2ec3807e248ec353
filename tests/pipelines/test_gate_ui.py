"""The gate and a failed shard as the operator sees them: `dagster dev` (dry-run deployment),
both datasets synced by their sync-now jobs, one stored chunk corrupted, the verify job run
(it fails, naming the shard), the gate materialized. In headless Chromium the gate's check
shows "not ready" with that shard and the reason, and the failed verify run shows its headline.

With MIGRATOR_SCREENSHOTS set (e.g. docs/images), the pages' screenshots are saved there as
gate.png and failed-shard.png. The helpers are tests/pipelines/test_webserver_ui.py's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipelines import DEMO_SHAPED_DATASETS, PROFILES, VIDEO_SIZES
from tests.pipelines.test_webserver_ui import (
    LAUNCH_RUN,
    REPO,
    DagsterDev,
    _wait_for_run,
    chromium,
    png_colours,
    running_dagster_dev,
)
from tests.planfiles import flip_bit, write_objects, write_plan, write_profiles

SHARD = 2
STAND_IN_DEST = Path("state/dagster-dry-run/dest")
# Named by the pages; the dry run stands in for it with a folder, so no S3 is needed.
DESTINATION = "{kind: s3, bucket: archive, prefix: t/, region: us-east-1}"


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    site = tmp_path / "site"
    write_profiles(site / "data" / "user_profiles", PROFILES, files=3)
    write_objects(site / "data" / "videos", VIDEO_SIZES)
    plan = write_plan(site, datasets=DEMO_SHAPED_DATASETS, destination=DESTINATION)
    with running_dagster_dev(tmp_path, plan, env={"MIGRATOR_OVERVIEW_INTERVAL": "2"}) as dev:
        yield dev


def launch(dev: DagsterDev, job: str, config: dict[str, Any] | None = None, **more: Any) -> str:
    op = f"{job}_op"
    params = {
        "selector": {
            "repositoryLocationName": "pipelines",
            "repositoryName": "__repository__",
            "jobName": job,
            **more,
        },
        "runConfigData": {"ops": {op: {"config": config}}} if config is not None else {},
    }
    launched = dev.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id: str = launched["run"]["runId"]
    return run_id


def page_text(url: str, profile: Path) -> str:
    dom = chromium(url, profile, "--dump-dom").stdout.decode(errors="replace")
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def screenshot(url: str, profile: Path, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("MIGRATOR_SCREENSHOTS") or tmp_path)
    shot = (REPO / folder if not folder.is_absolute() else folder) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium(url, profile, "--window-size=1600,1400", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000 and png_colours(shot) > 16, f"{name} is blank"


def test_the_gate_and_a_failed_shard_read_at_a_glance(
    dagster_dev: DagsterDev, tmp_path: Path
) -> None:
    dev = dagster_dev
    for dataset in ("user_profiles", "videos"):
        done = _wait_for_run(dev, launch(dev, f"sync_now_{dataset}", {"sample": 1.0}))
        assert done["status"] == "SUCCESS", dev.log_tail()

    chunk = dev.site / STAND_IN_DEST / f"user_profiles/g000001/s{SHARD:05d}/r/00000000.mgc"
    flip_bit(chunk, -20)
    failed = launch(dev, "verify_user_profiles", {"sample": 1.0})
    assert _wait_for_run(dev, failed)["status"] == "FAILURE"
    gate = launch(dev, "__ASSET_JOB", assetSelection=[{"path": ["test", "cutover_readiness"]}])
    assert _wait_for_run(dev, gate)["status"] == "SUCCESS", "'not ready' is not a failed run"

    dev.graphql("mutation { setNuxSeen }")  # the first-visit dialog would cover the page
    profile = tmp_path / "chromium"
    check_page = f"{dev.url}/assets/test/cutover_readiness?view=checks"
    text = page_text(check_page, profile)
    assert "all_shards_match" in text and "Failed" in text, text[:3000]
    assert f"NOT READY: 1 of 7 shards (or datasets); first: user_profiles shard {SHARD}" in text
    gate_page = f"{dev.url}/assets/test/cutover_readiness"
    text = page_text(gate_page, profile)
    (tmp_path / "gate.txt").write_text(text)
    assert f"user_profiles {SHARD} integrity check failed" in text, text[:3000]
    assert "integrity check failed" in text and "Estimated write freeze" in text
    screenshot(gate_page, profile, "gate.png", tmp_path)

    run_page = f"{dev.url}/runs/{failed}"  # its headline names the shard and the fix
    text = page_text(run_page, profile)
    assert f"shard {SHARD}: TamperedError" in text and "REPAIR.md" in text, text[:3000]

    # The overview lists the failed shard with its reason and the runbook step.
    overview = f"{dev.url}/assets/test/migration_overview"
    deadline = time.monotonic() + 60
    while f"| user_profiles | {SHARD} |" not in str(latest_failed(dev)):
        assert time.monotonic() < deadline, (
            f"the overview never listed the shard:\n{dev.log_tail()}"
        )
        time.sleep(1.0)
    text = page_text(overview, profile)
    (tmp_path / "failed-shard.txt").write_text(text)
    assert "REPAIR.md" in text and "failed shard" in text, text[:3000]
    screenshot(overview, profile, "failed-shard.png", tmp_path)


LATEST_FAILED = """
query Latest($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(limit: 1) {
    metadataEntries { label ... on MarkdownMetadataEntry { mdStr } }
  } } }
}"""


def latest_failed(dev: DagsterDev) -> str:
    asset = dev.graphql(LATEST_FAILED, {"key": {"path": ["test", "migration_overview"]}})
    found = asset["assetOrError"].get("assetMaterializations") or []
    entries = found[0]["metadataEntries"] if found else []
    return next((e.get("mdStr", "") for e in entries if e["label"] == "failed"), "")

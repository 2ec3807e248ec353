"""The overview in the UI, during a backfill: `dagster dev` (its daemon ticks the overview
sensor every few seconds) runs a backfill of a dataset's shards one run at a time, and the
`migration_overview` asset's page, rendered in headless Chromium while shards are still to
come, shows the bytes moved of the total, the throughput and the ETA.

With MIGRATOR_SCREENSHOTS set (e.g. docs/images), the page's screenshot is saved there as
overview.png. The helpers (dagster dev, Chromium) are tests/pipelines/test_webserver_ui.py's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipelines.test_webserver_ui import (
    REPO,
    DagsterDev,
    chromium,
    png_colours,
    running_dagster_dev,
)
from tests.planfiles import write_plan, write_profiles

SHARDS = 12
PROFILES = 24_000  # about 0.5 MiB a shard: each shard run commits several chunks
DATASETS = f"""\
  - {{name: user_profiles, kind: records, format: jsonl,
     source: {{kind: local, path: data/user_profiles}}, key: user_id, shards: {SHARDS}}}
"""
# Named by the page; the dry run stands in for it with a folder, so no S3 is needed.
DESTINATION = "{kind: s3, bucket: archive, prefix: t/, region: us-east-1}"
WAIT_SECONDS = 120.0
OVERVIEW = {"path": ["test", "migration_overview"]}

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
LATEST_OVERVIEW = """
query LatestOverview($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(limit: 1) {
    metadataEntries {
      label
      ... on TextMetadataEntry { text }
      ... on FloatMetadataEntry { floatValue }
    }
  } } }
}"""

SIZE = r"\d+(\.\d)? (B|KiB|MiB|GiB)"
MOVED = re.compile(rf"{SIZE} of {SIZE} \(\d+\.\d %\)")
THROUGHPUT = re.compile(rf"{SIZE}/s \(last 5 min\)")
DURATION = r"\d+(\.\d)? (s|min|h)"


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[DagsterDev]:
    """dagster dev on a plan of one records dataset; runs one at a time (so a backfill lasts),
    the overview sensor every 2 seconds."""
    site = tmp_path / "site"
    write_profiles(site / "data" / "user_profiles", PROFILES, files=6)
    plan = write_plan(site, datasets=DATASETS, destination=DESTINATION)
    runs = "concurrency:\n  runs:\n    max_concurrent_runs: 1\n"
    with running_dagster_dev(
        tmp_path, plan, instance_yaml=runs, env={"MIGRATOR_OVERVIEW_INTERVAL": "2"}
    ) as dev:
        yield dev


def _latest_overview(dev: DagsterDev) -> dict[str, Any]:
    asset = dev.graphql(LATEST_OVERVIEW, {"key": OVERVIEW})["assetOrError"]
    found = asset.get("assetMaterializations") or []
    if not found:
        return {}
    entries = found[0]["metadataEntries"]
    return {e["label"]: e.get("text", e.get("floatValue")) for e in entries}


def _backfill_status(dev: DagsterDev, backfill: str) -> str:
    status: str = dev.graphql(BACKFILL_STATUS, {"id": backfill})["partitionBackfillOrError"][
        "status"
    ]
    return status


def _overview_midway(dev: DagsterDev) -> dict[str, Any]:
    """The first overview reported with a throughput and an ETA (some shards done, more to do)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        shown = _latest_overview(dev)
        if (shown.get("throughput_mib_per_s") or 0) > 0 and re.fullmatch(
            DURATION, str(shown.get("eta"))
        ):
            return shown
        time.sleep(1.0)
    pytest.fail(
        f"no overview with a throughput and an ETA after {WAIT_SECONDS:.0f}s:\n{dev.log_tail()}"
    )


def test_the_overview_page_shows_moved_total_throughput_and_eta_during_a_backfill(
    dagster_dev: DagsterDev, tmp_path: Path
) -> None:
    dev = dagster_dev
    params = {
        "assetSelection": [{"path": ["test", "user_profiles"]}],
        "partitionNames": [str(shard) for shard in range(SHARDS)],
    }
    launched = dev.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = launched["backfillId"]

    shown = _overview_midway(dev)
    assert MOVED.fullmatch(shown["moved"]) and THROUGHPUT.fullmatch(shown["throughput"])
    assert shown["mode"] == "dry run (stand-ins)"
    assert shown["destination"] == "stand-ins for s3://archive/t/ (dry run: nothing reaches it)"

    dev.graphql("mutation { setNuxSeen }")  # the first-visit newsletter dialog would cover all
    page = f"{dev.url}/assets/test/migration_overview"
    dom = chromium(page, tmp_path / "chromium", "--dump-dom").stdout.decode(errors="replace")
    assert _backfill_status(dev, backfill) == "REQUESTED", "the backfill ended before the page"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    (tmp_path / "page.txt").write_text(text)
    assert MOVED.search(text), f"moved bytes of the total are not on the page:\n{text[:3000]}"
    assert THROUGHPUT.search(text), "the throughput is not on the page"
    # The metadata table: key, the report's time, value.
    assert re.search(rf"eta (\w+ \d+, [\d:]+ [AP]M )?{DURATION}", text), "no ETA on the page"

    folder = Path(os.environ.get("MIGRATOR_SCREENSHOTS") or tmp_path)
    shot = (REPO / folder if not folder.is_absolute() else folder) / "overview.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium(page, tmp_path / "chromium", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000, "the screenshot is too small to hold a page"
    assert png_colours(shot) > 16, "the screenshot is blank"

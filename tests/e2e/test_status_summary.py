"""`migrator status` summarises: per dataset its totals and only the shards not complete (or
held by a worker), so thousands of shards are not thousands of lines; `--shards` lists all."""

from __future__ import annotations

import re
from pathlib import Path

from tests.planfiles import run_cli, write_plan, write_profiles

PROFILES = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 8}
"""


def shard_rows(text: str) -> int:
    """Table rows of complete shards: a shard number, then its status."""
    return len(re.findall(r"\d+ . complete ", text))


def test_status_lists_only_what_is_not_complete_unless_asked(tmp_path: Path) -> None:
    write_profiles(tmp_path / "data" / "profiles", 300)
    write_plan(tmp_path, datasets=PROFILES)
    assert run_cli("run", "plan.yaml", cwd=tmp_path).returncode == 0
    summary = run_cli("status", "plan.yaml", cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert "8/8 shards complete; 300 records" in summary.stdout
    assert "8 complete shards not listed (--shards)" in summary.stdout
    every = run_cli("status", "plan.yaml", "--shards", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    assert "not listed" not in every.stdout
    assert (shard_rows(summary.stdout), shard_rows(every.stdout)) == (0, 8)

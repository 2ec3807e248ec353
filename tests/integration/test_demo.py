"""`migrator demo`: generate, migrate into moto S3, verify, restore, compare, land and compare
again, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.planfiles import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_16mib(tmp_path: Path) -> None:
    done = run_cli("demo", "--size", "16MiB", "--workdir", tmp_path / "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo OK" in done.stdout
    assert "demo FAILED" not in done.stdout
    assert "verify OK" in done.stdout
    # ... and it ends by landing, then comparing the landed copy with the source
    assert "landing check: all" in done.stdout
    assert "landed equal to the source" in done.stdout
    landed = tmp_path / "demo" / "landed"
    assert {p.name for p in landed.iterdir()} == {"user_profiles", "video_metadata", "videos"}

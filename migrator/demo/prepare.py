"""`python -m migrator.demo.prepare [PLAN]`: make manifests/demo.yaml runnable here (for the
Dagster UI): synthetic data where its sources point, and its KEK file. Leaves existing ones."""

from __future__ import annotations

import sys
from pathlib import Path

from migrator.demo.synth import generate_demo_data
from migrator.keys.local import init_kek_file
from migrator.plan.model import LocalKekPlan, LocalSourcePlan, load_plan

DEMO_SIZE = 64 * 1024 * 1024


def prepare(plan_path: Path) -> None:
    plan = load_plan(plan_path, check_sources=False)
    paths = [ds.source.path for ds in plan.datasets if isinstance(ds.source, LocalSourcePlan)]
    missing = [p for p in paths if not p.is_dir()]
    # The demo plan's sources are siblings (data/user_profiles, data/videos, ...).
    for root in sorted({p.parent for p in missing}):
        data = generate_demo_data(root, DEMO_SIZE)
        print(f"generated {data.total_bytes:,} bytes of demo data under {root}")
    kek = plan.keys.kek_file if isinstance(plan.keys, LocalKekPlan) else None
    if kek is not None and not kek.exists():
        init_kek_file(kek)
        print(f"created KEK {kek}")


if __name__ == "__main__":
    prepare(Path(sys.argv[1] if len(sys.argv) > 1 else "manifests/demo.yaml"))

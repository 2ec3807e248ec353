"""Where a records run spends its time: routing vs encoding, and the engine process's profile.

    python bench/phases.py [--size 512MiB] [--kind records|objects] [--profile] [--workdir DIR]

One `migrator.run` in this process (local to local, the plan bench.py runs) with a progress sink
that timestamps each phase; --profile adds cProfile's top functions by own time (worker
processes, when routing uses them, are not in it).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import bench
import migrator
from migrator.keys.local import init_kek_file
from migrator.sizes import parse_size


class Phases(migrator.ProgressSink):
    def __init__(self) -> None:
        self.marks: list[tuple[str, float, int]] = []

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        self.marks.append((phase, time.monotonic(), total_bytes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="512MiB")
    ap.add_argument("--kind", choices=("records", "objects"), default="records")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-phases-"))
    console = Console()
    bench.prepare_data(work / "data", parse_size(args.size), console)  # reused if it fits
    run_dir = work / f"phases-{args.kind}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    plan_text = bench.plan_yaml(args.kind, 3).replace("../../data", str(work / "data"))
    (run_dir / "plan.yaml").write_text(plan_text)
    init_kek_file(run_dir / "kek.key")
    plan = migrator.load_plan(run_dir / "plan.yaml")
    phases = Phases()
    profile = cProfile.Profile()
    started = time.monotonic()
    with migrator.connect(plan) as conn:
        if args.profile:
            profile.enable()
        report = migrator.run(conn, progress=phases)
        if args.profile:
            profile.disable()
    ended = time.monotonic()
    marks = [*phases.marks, ("end", ended, 0)]
    for (phase, t, total), (_, t_next, _) in itertools.pairwise(marks):
        seconds = t_next - t
        console.print(f"{phase:10s} {seconds:6.2f} s  {total / max(seconds, 1e-9) / 1e6:7.1f} MB/s")
    whole = ended - started
    console.print(f"whole run  {whole:6.2f} s  {report.bytes_in / whole / 1e6:7.1f} MB/s")
    if args.profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        console.print(out.getvalue())
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

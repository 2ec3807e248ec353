"""Peak RSS of `migrator run` against the memory limit, and whether it stays flat as input grows.

    python bench/memory.py [--sizes 1GiB,4GiB] [--kinds records-400,objects] [--level 3]
                           [--workdir DIR] [--json out.json]

For each size, --size of each kind is generated (once; reused from --workdir) and migrated by a
fresh `migrator run` (local destination, 16 shards, the plan bench.py runs), its process tree's
RSS polled every 20 ms. Each peak is printed beside the limit, and per kind the peak at the
largest size over the peak at the smallest: memory that grows with the input shows as a ratio
above FLAT_RATIO.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import orjson
from datasets import ALL_KINDS, parse_kinds, prepare_data, warm_read
from machine import machine_info
from rich.console import Console
from rich.table import Table
from scorecard import RSS_LIMIT_MIB
from timed_runs import OTHER_LOAD_WARN_CPUS, Run, log_tail, run_migration

from migrator.sizes import MiB, format_size, parse_size

DEFAULT_KINDS = "records-400,objects"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "memory.json"
FLAT_RATIO = 1.10  # peak RSS at the largest size over the smallest, at most


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({parse_size(part.strip()) for part in text.split(",") if part.strip()})
    if not sizes:
        raise ValueError("give at least one size, e.g. 1GiB,4GiB")
    return sizes


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def memory_table(runs: dict[tuple[str, int], Run]) -> Table:
    table = Table(title=f"peak RSS of migrator run (limit {RSS_LIMIT_MIB:.0f} MiB)")
    for column in ("kind", "input", "MB/s", "peak RSS MiB", "limit"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for (kind, size), run in sorted(runs.items(), key=lambda item: item[0]):
        if not run.ok:
            table.add_row(kind, format_size(size), "FAILED", f"exit {run.exit_code}", "")
            continue
        peak = run.peak_rss_bytes / MiB
        table.add_row(
            kind,
            format_size(size),
            f"{run.mb_s:,.0f}",
            f"{peak:,.0f}",
            f"{RSS_LIMIT_MIB:.0f} {_verdict(peak <= RSS_LIMIT_MIB)}",
        )
    return table


def growth(runs: dict[tuple[str, int], Run], kinds: Sequence[str]) -> dict[str, float]:
    """Per kind, peak RSS at the largest size over the smallest (kinds with two good runs)."""
    result: dict[str, float] = {}
    for kind in kinds:
        peaks = sorted((size, run.peak_rss_bytes) for (k, size), run in runs.items() if k == kind)
        if len(peaks) >= 2 and peaks[0][1] and all(runs[kind, s].ok for s, _ in peaks):
            result[kind] = peaks[-1][1] / peaks[0][1]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1GiB,4GiB", help="input sizes, per kind")
    parser.add_argument("--kinds", default=DEFAULT_KINDS, help=f"of {','.join(ALL_KINDS)}")
    parser.add_argument("--level", type=int, default=3, help="zstd level")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--workdir", type=Path, help="keep data here and reuse it (default: temp)")
    args = parser.parse_args(argv)
    try:
        sizes, kinds = parse_sizes(args.sizes), parse_kinds(args.kinds)
    except ValueError as exc:
        parser.error(str(exc))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-memory-"))
    runs: dict[tuple[str, int], Run] = {}
    try:
        for size in sizes:
            size_dir = workdir / f"size-{size}"  # data and runs of one size, as bench.py lays out
            prepare_data(size_dir / "data", size, console, kinds)
            for kind in kinds:
                warm_read(size_dir / "data" / kind)
                console.print(f"running migrator on {format_size(size)} of {kind} ...")
                runs[kind, size] = run = run_migration(size_dir, kind, args.level)
                if not run.ok:
                    console.print(f"run({kind}) failed; last lines of its log:", style="red")
                    console.print(log_tail(size_dir / "runs" / run.log), markup=False)
                shutil.rmtree(size_dir / "runs" / kind / "dest", ignore_errors=True)
        console.print(memory_table(runs))
        flat = growth(runs, kinds)
        for kind, ratio in flat.items():
            console.print(
                f"{kind}: peak RSS at {format_size(sizes[-1])} / at {format_size(sizes[0])} ="
                f" {ratio:.2f} (flat: ≤{FLAT_RATIO:.2f}) {_verdict(ratio <= FLAT_RATIO)}"
            )
        for (kind, size), run in runs.items():
            if run.other_load_cpus > OTHER_LOAD_WARN_CPUS:
                console.print(
                    f"warning: other processes kept {run.other_load_cpus:.2f} CPUs busy during"
                    f" {kind} at {format_size(size)}: its MB/s is unreliable",
                    style="yellow",
                )
        record = {
            "machine": machine_info(zstd_level=args.level),
            "rss_limit_mib": RSS_LIMIT_MIB,
            "flat_ratio": FLAT_RATIO,
            "runs": [
                {"kind": kind, "size_bytes": size, **asdict(run), "mb_s": run.mb_s}
                for (kind, size), run in runs.items()
            ],
            "growth": flat,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"results written to {args.json}")
        return 0 if all(run.ok for run in runs.values()) else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

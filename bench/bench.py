"""Throughput benchmark: the hot loop's ceiling, then `migrator run` end to end, on the same data.

    python bench/bench.py [--size 1GiB] [--level 3] [--json out.json] [--workdir DIR]
                          [--kinds records,records-400,records-csv,objects,landing,overhead]
                          [--quick] [--ceiling-only] [--no-peers] [--keep]

Each kind (datasets.py: JSONL records of ~1 KB and ~400 B, CSV rows of ~150 B, incompressible
videos) gets --size of data. The ceiling is ChunkEncoder over 16 MiB in-memory chunks on every
core; each end-to-end run is a fresh `migrator run` of a one-dataset plan, timed wall-clock, with
its peak RSS. Then the peers on the same data (peer_runs.py, peers.py): `restic backup`,
`rclone copy` to a crypt remote, and `migrator run` into S3 on a local moto server next to
`aws s3 cp --recursive` of the same encrypted bytes; then routing alone, in process, per record
(routing_cost.py). Every run is scored against its targets (scorecard.py). The `landing` kind
(landing.py) times `migrator land` of the objects into S3 on moto beside `aws s3 cp` of the same
plain files. The `overhead` kind (run_overhead.py; not in the default) times single-shard
Dagster runs launched as the daemon launches them, per executor. Memory at 1 and 4 GiB: memory.py.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import orjson
import peers
import zstandard
from ceiling import CEILING_CHUNKS, Ceiling, measure_ceiling, measure_disk_write, primitives
from datasets import ALL_KINDS, CHUNK_SIZE, chunks_of, parse_kinds, prepare_data, warm_read
from datasets import plan_yaml as plan_yaml  # phases.py takes it from here
from landing import Landing, measure_landing, print_landing
from machine import machine_info
from peer_runs import PEERS_NOTE, Peers, peers_record, run_peers
from report import WARM_NOTE, Results, print_report
from rich.console import Console
from routing_cost import measure_all
from scorecard import TARGETS_NOTE, run_record, score
from timed_runs import Run, log_tail, run_migration

from migrator.sizes import MiB, parse_size

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
DISK_PROBE_MAX = 1024 * MiB
LANDING = "landing"  # a row of its own, on the objects kind's data (landing.py)
OVERHEAD = "overhead"  # per-shard Dagster run overhead (run_overhead.py): data of its own


def measure_ceilings(
    data: Path, kinds: Sequence[str], level: int, console: Console
) -> tuple[dict[str, Ceiling], dict[str, float]]:
    ceilings: dict[str, Ceiling] = {}
    prims: dict[str, float] = {}
    for kind in kinds:
        chunks = list(itertools.islice(chunks_of(data / kind), CEILING_CHUNKS))
        ceilings[kind] = measure_ceiling(chunks, level)
        prims.update(primitives(kind, chunks, level, data_independent=not prims))
        console.print(f"ceiling({kind}): {ceilings[kind].mb_s:,.0f} MB/s")
        del chunks  # the runs get the memory back
    return ceilings, prims


def parse_bench_kinds(text: str) -> tuple[tuple[str, ...], bool]:
    """The data kinds to run, and whether to time landing; ValueError names unknown kinds."""
    parts = [part.strip() for part in text.split(",")]
    landing = LANDING in parts
    rest = ",".join(part for part in parts if part != LANDING)
    return (parse_kinds(rest) if rest or not landing else ()), landing


def run_landing(
    workdir: Path, level: int, console: Console, peer: Peers | None, no_peers: bool
) -> Landing:
    """`migrator land` beside `aws s3 cp`, with the AWS CLI the peers found (if they ran)."""
    if no_peers:
        aws: peers.Tool | None = peers.Tool("aws", missing_reason="--no-peers was given")
    else:
        aws = peer.tools.get("aws") if peer is not None else None
    return measure_landing(workdir, level, console, aws)


def results_json(
    results: Results, size: int, kinds: Sequence[str], landing: Landing | None
) -> dict[str, object]:
    peer_result = results.peer_result
    return {
        "size_per_type_bytes": size,
        "kinds": list(kinds) + ([LANDING] if landing is not None else []),
        "chunk_size": CHUNK_SIZE,
        "machine": results.machine,
        "ceiling": {
            k: {**asdict(c), "compression": c.compression} for k, c in results.ceilings.items()
        },
        "single_thread_mb_s": results.prims,
        "destination_disk_write_mb_s": results.disk_mb_s,
        "runs": {k: run_record(card) for k, card in results.cards.items()},
        "peers": peers_record(peer_result, results.runs) if peer_result is not None else None,
        "routing_cost": {cost.kind: cost.record() for cost in results.routing},
        "landing": landing.record() if landing is not None else None,
        "notes": [WARM_NOTE, TARGETS_NOTE] + ([PEERS_NOTE] if peer_result is not None else []),
    }


def print_failures(
    console: Console, workdir: Path, runs: dict[str, Run], peer: Peers | None
) -> int:
    """The end of every failed run's log; 1 if a migrator run failed (a peer's failure is not)."""
    failed = [kind for kind, run in runs.items() if not run.ok]
    for kind in failed:
        console.print(f"run({kind}) failed; last lines of its log:", style="red")
        console.print(log_tail(workdir / "runs" / runs[kind].log), markup=False)
    for row in peer.runs if peer is not None else []:
        if not row.ok:
            why = f" ({row.note})" if row.note else ""
            console.print(f"{row.label} failed{why}; last lines of its log:", style="red")
            console.print(log_tail(workdir / "runs" / "peers" / row.log), markup=False)
    failed_s3 = [p for p in (peer.runs if peer else []) if p.tool == "migrator" and not p.ok]
    return 1 if failed or failed_s3 else 0


def run_overhead_kind(workdir: Path | None, keep: bool) -> int:
    """bench/run_overhead.py with its defaults (results in bench/results/run_overhead.json)."""
    import run_overhead  # imports Dagster: only when asked for

    argv = ["--workdir", str(workdir / OVERHEAD)] if workdir else []
    if keep:
        argv.append("--keep")
    return run_overhead.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="1GiB", help="data per kind")
    parser.add_argument("--quick", action="store_true", help="smoke run: --size 64MiB")
    every = ",".join((*ALL_KINDS, LANDING))
    parser.add_argument("--kinds", default=every, help=f"a subset of {every}, or {OVERHEAD}")
    parser.add_argument("--level", type=int, default=3, help="zstd level")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--workdir", type=Path, help="keep data here and reuse it (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument(
        "--ceiling-only", action="store_true", help="skip the end-to-end runs and routing"
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="skip restic, rclone, and migrator into S3 vs aws s3 cp",
    )
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.kinds.split(",")]
    overhead = run_overhead_kind(args.workdir, args.keep) if OVERHEAD in parts else 0
    if not (rest := ",".join(part for part in parts if part != OVERHEAD)):
        return overhead
    try:
        kinds, with_landing = parse_bench_kinds(rest)
    except ValueError as exc:
        parser.error(str(exc))
    size = parse_size("64MiB" if args.quick else args.size)
    # Wide enough for the tables when the output goes to a file or a CI log.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    landing: Landing | None = None
    try:
        data_kinds = [k for k in ALL_KINDS if k in kinds or (with_landing and k == "objects")]
        prepare_data(data, size, console, data_kinds)
        for kind in data_kinds:
            warm_read(data / kind)
        machine = machine_info(zstd_level=args.level, zstandard=zstandard.__version__)
        ceilings, prims = measure_ceilings(data, kinds, args.level, console)
        results = Results(machine, ceilings, prims, {}, {})
        if not args.ceiling_only:
            threads = os.cpu_count() or 1
            results.disk_mb_s = measure_disk_write(
                workdir / "disk-probe", min(size, DISK_PROBE_MAX), threads
            )
            for kind in kinds:
                console.print(f"running migrator on {kind} ...")
                results.runs[kind] = run_migration(workdir, kind, args.level)
            if not args.no_peers and kinds:
                results.peer_result = run_peers(workdir, args.level, results.runs, console, kinds)
            results.routing = measure_all(data, kinds, console)
            if with_landing:
                console.print("landing objects into S3 on moto, beside aws s3 cp ...")
                landing = run_landing(
                    workdir, args.level, console, results.peer_result, args.no_peers
                )
        for kind, run in results.runs.items():
            results.cards[kind] = score(
                kind, run, ceilings[kind].mb_s, results.disk_mb_s, results.peer_result
            )

        print_report(console, results)
        if landing is not None:
            print_landing(console, landing, workdir)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = results_json(results, size, kinds, landing)
        args.json.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"results written to {args.json}")
        # Missed targets and failed peer tools are reported, not fatal; a failed migrator run is.
        failed = print_failures(console, workdir, results.runs, results.peer_result)
        return 1 if failed or overhead or (landing is not None and landing.failed) else 0
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            console.print(f"workdir kept: {workdir}")


if __name__ == "__main__":
    sys.exit(main())

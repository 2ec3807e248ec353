"""Incremental sync benchmark: time and upload of a sync on N and on 4N records, in one run.

    python bench/sync.py [--records N] [--change 0.01] [--file-mib 8] [--workdir DIR]
                         [--json OUT] [--quick] [--keep]

For each size: generate N JSONL profiles (~600 B) in files of a fixed size (--file-mib, so 4N
has four times the files), bulk-run them, change --change of them (half updates, a quarter
deletes, a quarter inserts, in every file), sync, sync again with no change, then change one
file (a few records edited, one deleted, one added) and sync. A sync should cost the change,
not the source: the no-change and one-file syncs are held against a share of the bulk's time.
The machines are noisy, so only ratios measured here, in the same run, mean anything.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psutil
from machine import machine_info
from rich.console import Console
from rich.table import Table

import migrator
from migrator.keys.local import init_kek_file
from migrator.plan.model import Plan
from migrator.sizes import MiB, format_size

FILE_MIB = 8  # default size of a source file
SHARDS = 64
SEED = 7
BIO_WORDS = (60, 140)  # ~600-byte records on average
_TEXT = (
    "the a of and to in is for on with my our this that love life day night time today music"
    " dance travel food coffee recipe garden city beach mountain road trip friends family dog"
    " cat photo film camera studio live stream game team season fan art design style fitness"
    " yoga bike ocean river forest sunset story share follow creator vlog tutorial review tech"
    " code build craft paint book song guitar piano band concert festival café naïve crème"
)
WORDS = tuple(_TEXT.split())
CUM_WEIGHTS = tuple(itertools.accumulate(1 / rank for rank in range(1, len(WORDS) + 1)))
COUNTRIES = ("US", "DE", "BR", "JP", "IN", "FR", "MX", "KR", "NG", "ES")
UID_DIGITS = slice(13, 22)  # b'{"user_id":"u' then 9 digits: orjson keeps the key order
ONE_FILE_EDITS = 3  # the one-file change: records edited (and one deleted, one added)
# Targets of a sync's time as a share of the bulk's (issue 16), at N and at 4N.
TARGETS = {"no-change": 0.05, "one-file": 0.10}


def profile(index: int, rev: int) -> bytes:
    """Profile `index` at revision `rev`: the same bytes every time, other bytes per revision."""
    rng = random.Random(index * 16 + rev)
    handle = f"user{index}.{rng.randrange(10_000)}"
    return orjson.dumps(
        {
            "user_id": f"u{index:09d}",
            "handle": handle,
            "email": f"{handle}@example.com",
            "country": rng.choice(COUNTRIES),
            "created_at": f"20{rng.randrange(12, 25)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}",
            "followers": int(rng.paretovariate(1.2) * 10),
            "bio": " ".join(
                rng.choices(WORDS, cum_weights=CUM_WEIGHTS, k=rng.randrange(*BIO_WORDS))
            ),
            "rev": rev,
        }
    )


def _write_part(path: Path, indices: range) -> int:
    with path.open("wb") as out:
        out.writelines(profile(i, 0) + b"\n" for i in indices)
    return path.stat().st_size


def records_per_file(file_bytes: int) -> int:
    """Profiles that make a file of about `file_bytes` (their mean size, from a sample)."""
    sample = [len(profile(i, 0)) + 1 for i in range(2000)]
    return max(1, round(file_bytes * len(sample) / sum(sample)))


def generate(data: Path, records: int, per_file: int) -> int:
    """JSONL files of `per_file` contiguous profiles each (the last may hold fewer), written
    in parallel; returns bytes."""
    data.mkdir(parents=True)
    bounds = [*range(0, records, per_file), records]
    ranges = [range(a, b) for a, b in itertools.pairwise(bounds)]
    paths = [data / f"profiles-{f:05d}.jsonl" for f in range(len(ranges))]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return sum(pool.map(_write_part, paths, ranges))


def mutate(data: Path, records: int, change: float) -> dict[str, int]:
    """Rewrite the source with updates, deletes and inserts (new inodes, as an app's save)."""
    total = max(4, round(records * change))
    updates, deletes = total // 2, total // 4
    inserts = total - updates - deletes
    picked = random.Random(SEED).sample(range(records), updates + deletes)
    updated, deleted = set(picked[:updates]), set(picked[updates:])
    paths = sorted(data.glob("*.jsonl"))
    for f, path in enumerate(paths):
        tmp = path.with_name(path.name + ".new")
        with path.open("rb") as src, tmp.open("wb") as out:
            for line in src:
                index = int(line[UID_DIGITS])
                if index in updated:
                    out.write(profile(index, 1) + b"\n")
                elif index not in deleted:
                    out.write(line)
            out.writelines(
                profile(i, 0) + b"\n" for i in range(records + f, records + inserts, len(paths))
            )
        tmp.replace(path)
    return {"changed": total, "updates": updates, "deletes": deletes, "inserts": inserts}


def mutate_one_file(data: Path, records: int) -> dict[str, int]:
    """Rewrite the middle file only: its first ONE_FILE_EDITS records edited (revision 2,
    new to them whatever came before), the next one deleted, one new profile appended."""
    paths = sorted(data.glob("*.jsonl"))
    path = paths[len(paths) // 2]
    lines = path.read_bytes().splitlines(keepends=True)
    edited = [profile(int(line[UID_DIGITS]), 2) + b"\n" for line in lines[:ONE_FILE_EDITS]]
    kept = lines[ONE_FILE_EDITS + 1 :]
    added = profile(3 * records, 0) + b"\n"  # beyond every index --change inserts
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(b"".join([*edited, *kept, added]))
    tmp.replace(path)
    return {"changed": ONE_FILE_EDITS + 2, "updates": ONE_FILE_EDITS, "deletes": 1, "inserts": 1}


def write_plan(site: Path) -> Plan:
    """A one-dataset plan in YAML, as users write it (and the tests do), with a fresh KEK."""
    init_kek_file(site / "kek.key")
    (site / "plan.yaml").write_text(
        "version: 1\nname: syncbench\nstate_dir: state\n"
        "keys: {provider: local, kek_file: kek.key}\n"
        "destination: {kind: local, path: dest}\n"
        "datasets:\n"
        "  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data},"
        f" key: user_id, shards: {SHARDS}}}\n",
        encoding="utf-8",
    )
    return migrator.load_plan(site / "plan.yaml")


@dataclass
class Run:
    seconds: float
    uploaded: int  # bytes sent to the store, as the connection counted them
    puts: int
    records: int  # records written (a sync: updates + inserts)
    removed: int  # tombstones
    shards_changed: int
    kind: str
    peak_mib: float  # this process, sampled during the run
    ru_maxrss_mib: float  # cumulative over the whole benchmark, so far


def migrate(plan: Plan) -> Run:
    """One `migrator.run`, its uploads counted afresh, timed wall-clock, RSS sampled meanwhile."""
    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with migrator.connect(plan, count_traffic=True) as conn:
        started = time.perf_counter()
        report = migrator.run(conn)
        seconds = time.perf_counter() - started
        traffic = conn.traffic()
    done.set()
    sampler.join()
    ds: migrator.DatasetReport = report.datasets[0]
    if not ds.committed:
        raise RuntimeError(f"generation {ds.generation} was not committed")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    puts = traffic.requests.get("put", 0) + traffic.requests.get("upload_part", 0)
    counts = (ds.records, ds.removed, ds.shards_changed, ds.generation_kind)
    return Run(seconds, traffic.bytes_sent, puts, *counts, peak[0] / MiB, maxrss)


@dataclass
class Size:
    records: int
    files: int
    source_bytes: int
    bulk: Run
    sync: Run  # after --change of the records, in every file
    idle: Run  # a sync with nothing changed: the fixed cost of a sync
    one_file: Run  # a sync after one file changed (ONE_FILE_EDITS edits, a delete, an insert)
    changes: dict[str, int]

    @property
    def upload_ratio(self) -> float:
        return self.sync.uploaded / self.bulk.uploaded

    def of_bulk(self, run: str) -> float:
        """A sync's time as a share of the bulk's: "no-change" or "one-file"."""
        chosen = self.idle if run == "no-change" else self.one_file
        return chosen.seconds / self.bulk.seconds


def _expected(run: Run, changes: dict[str, int]) -> bool:
    written = changes["updates"] + changes["inserts"]
    removed = changes["updates"] + changes["deletes"]
    return (run.kind, run.records, run.removed) == ("sync", written, removed)


def bench_size(
    workdir: Path, records: int, change: float, file_mib: float, console: Console
) -> Size:
    site = workdir / f"n{records}"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    source_bytes = generate(site / "data", records, records_per_file(round(file_mib * MiB)))
    files = len(list((site / "data").glob("*.jsonl")))
    plan = write_plan(site)
    bulk = migrate(plan)
    changes = mutate(site / "data", records, change)
    sync, idle = migrate(plan), migrate(plan)
    one_changes = mutate_one_file(site / "data", records)
    one_file = migrate(plan)
    console.print(
        f"{records:,} records ({format_size(source_bytes)}, {files} files): bulk"
        f" {bulk.seconds:.2f} s, sync after a {change:.2%} change {sync.seconds:.2f} s,"
        f" no change {idle.seconds:.2f} s, one file changed {one_file.seconds:.2f} s"
    )
    if not _expected(sync, changes) or idle.shards_changed or not _expected(one_file, one_changes):
        console.print(
            f"warning: unexpected sync report {sync} / {idle} / {one_file}", style="yellow"
        )
    return Size(records, files, source_bytes, bulk, sync, idle, one_file, changes)


def ratios(sizes: list[Size]) -> dict[str, float]:
    """What survives a noisy machine: ratios of figures measured in this run, on this disk."""
    small, big = sizes
    out = {
        "sync time 4N/N": big.sync.seconds / small.sync.seconds,
        "no-change sync time 4N/N": big.idle.seconds / small.idle.seconds,
    }
    for s in sizes:
        for run in TARGETS:
            out[f"{run}/bulk time, N={s.records:,}"] = s.of_bulk(run)
        out[f"sync/bulk time, N={s.records:,}"] = s.sync.seconds / s.bulk.seconds
        out[f"no-change/sync time, N={s.records:,}"] = s.idle.seconds / s.sync.seconds
        out[f"upload sync/bulk, N={s.records:,}"] = s.upload_ratio
    return out


def print_report(console: Console, sizes: list[Size], machine: dict[str, object]) -> None:
    table = Table(title="incremental sync", title_justify="left")
    cells: dict[str, Callable[[Size], str]] = {
        "records": lambda s: f"{s.records:,}",
        "files": lambda s: f"{s.files:,}",
        "source": lambda s: format_size(s.source_bytes),
        "bulk s": lambda s: f"{s.bulk.seconds:.2f}",
        "sync s": lambda s: f"{s.sync.seconds:.2f}",
        "no-change s": lambda s: f"{s.idle.seconds:.2f}",
        "one-file s": lambda s: f"{s.one_file.seconds:.2f}",
        "written/tombstones": lambda s: f"{s.sync.records:,}/{s.sync.removed:,}",
        "bulk upload": lambda s: format_size(s.bulk.uploaded),
        "sync upload": lambda s: format_size(s.sync.uploaded),
        "upload ratio": lambda s: f"{s.upload_ratio:.2%}",
        "peak RSS MiB bulk/sync": lambda s: f"{s.bulk.peak_mib:,.0f}/{s.sync.peak_mib:,.0f}",
    }
    for column in cells:
        table.add_column(column, justify="right")
    for size in sizes:
        table.add_row(*(cell(size) for cell in cells.values()))
    console.print(table)
    for label, value in ratios(sizes).items():
        shown = f"{value:.2%}" if label.startswith("upload") else f"{value:.3f}"
        target = next((t for run, t in TARGETS.items() if label.startswith(f"{run}/bulk")), None)
        verdict = "" if target is None else f"  target ≤ {target:.3f} {_verdict(value, target)}"
        console.print(f"  {label:<36} {shown:>8}{verdict}")
    s = sizes[0]
    rewritten = (s.changes["updates"] + s.changes["inserts"]) / s.records
    console.print(f"4N/N is 4.0 if linear; the change writes {rewritten:.2%} of the records again")
    console.print(
        f"machine: {machine['cpu_count']} CPUs, Python {machine['python']},"
        f" load {machine['load_average_1m']:.2f}; source read from the page cache"
    )


def _verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=250_000, help="N (the larger size is 4N)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --records 20000")
    parser.add_argument("--change", type=float, default=0.01, help="share of records changed")
    parser.add_argument(
        "--file-mib", type=float, default=FILE_MIB, help="size of each source file, MiB"
    )
    parser.add_argument("--workdir", type=Path, help="where data and results go (default: temp)")
    parser.add_argument("--json", type=Path, help="results file (default: WORKDIR/sync-bench.json)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data and stores")
    args = parser.parse_args(argv)
    records = 20_000 if args.quick else args.records
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-sync-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = args.json or workdir / "sync-bench.json"
    # The load average: other work on the machine skews the seconds, less so the ratios.
    machine = machine_info()
    try:
        sizes = [
            bench_size(workdir, n, args.change, args.file_mib, console)
            for n in (records, 4 * records)
        ]
    finally:
        if not args.keep:
            for n in (records, 4 * records):
                shutil.rmtree(workdir / f"n{n}", ignore_errors=True)
    print_report(console, sizes, machine)
    result = {
        "machine": machine,
        "shards": SHARDS,
        "change": args.change,
        "file_mib": args.file_mib,
        "targets": TARGETS,
        "sizes": [{**asdict(s), "upload_ratio": s.upload_ratio} for s in sizes],
        "ratios": ratios(sizes),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    console.print(f"results written to {out}" + (f"; data kept in {workdir}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

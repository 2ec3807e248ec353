"""Scale benchmark of the bookkeeping: the state store at 16 M chunks (1 PiB at 64 MiB).

    python bench/scale.py [--chunks 16000000] [--shards 4096] [--batch 256] [--workdir DIR]
                          [--json OUT] [--quick] [--keep]

It fills a fresh StateDB with --chunks committed object parts of one objects dataset
(64 MiB plaintext each, spread by name hash over --shards shards), in the engine's order and
batches: objects in listing order, parts of one object together, commit_chunks every --batch
chunks. Every shard is marked running first and complete last, each after reading its chunks
for its manifest, as the engine does. Then, on the full store, it times what a resume reads
(shard_chunks of 20 random shards, committed_chunk of 1,000 random parts), what `migrator
status` runs (shard_progress, and the CLI itself), and measures the database on disk.
`--quick` is a smoke run: 400,000 chunks over 512 shards.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import xxhash
from machine import machine_info
from rich.console import Console
from rich.table import Table

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.digests import ObjectEntry, ObjectsMap, objects_digest, pack_objects_map, to_hex
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.keys.datakey import DataKey
from migrator.repository.names import manifest_key, object_part_key
from migrator.sharding import shard_of
from migrator.sizes import GiB, MiB, format_size
from migrator.state.db import StateDB
from migrator.state.model import CommittedChunk, ShardStatus
from migrator.wiring import STATE_FILE
from migrator.write.committer import COMMIT_BATCH

PLAN = "scale"
DATASET = "videos"
GENERATION = 1
PART_SIZE = 64 * MiB
SEED = 7
MAX_PARTS = 31  # parts per object: uniform 1..31, so ~16 (1 GiB) on average
DEFAULT_CHUNKS = 16_000_000
DEFAULT_SHARDS = 4096
QUICK_CHUNKS = 400_000
QUICK_SHARDS = 512
RESUME_SHARDS = 20
LOOKUP_KEYS = 1000
STATUS_REPEAT = 3
# Free space demanded before a fill: 10 GiB for the default 16 M chunks, pro rata otherwise.
FREE_BYTES_PER_CHUNK = 10 * GiB / DEFAULT_CHUNKS
MIN_FREE = 1 * GiB
# Reference link for the verdict: how many chunks a second a fast migration commits.
LINK_BYTES_S = 10e9 / 8  # 10 Gbit/s
SITE = "scale-bench"  # the only folder this benchmark creates (and replaces) in the workdir
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "scale.json"


@dataclass
class Decile:
    upto_pct: int
    rows_at_end: int
    chunks: int
    commit_s: float
    wall_s: float

    @property
    def commit_rate(self) -> float:
        return self.chunks / self.commit_s if self.commit_s else 0.0

    @property
    def wall_rate(self) -> float:
        return self.chunks / self.wall_s if self.wall_s else 0.0


@dataclass
class Fill:
    chunks: int = 0
    objects: int = 0
    batches: int = 0
    commit_s: float = 0.0
    wall_s: float = 0.0
    batch_s: list[float] = field(default_factory=list)
    deciles: list[Decile] = field(default_factory=list)
    running_s: float = 0.0  # set_shard_status(RUNNING) of every shard
    manifest_read_s: float = 0.0  # list(shard_chunks) of every shard, as a manifest is built
    complete_s: float = 0.0  # complete_shard of every shard (with its inventory)
    inventory_bytes: int = 0
    shard_min: int = 0
    shard_max: int = 0

    @property
    def commit_rate(self) -> float:
        return self.chunks / self.commit_s if self.commit_s else 0.0


@dataclass
class Sample:
    """What the fill remembers for the look-ups afterwards."""

    keys: list[str] = field(default_factory=list)  # committed part keys
    missing: list[str] = field(default_factory=list)  # keys of parts never committed
    inventories: dict[int, ObjectsMap] = field(default_factory=dict)
    per_shard: list[int] = field(default_factory=list)


# --- data -------------------------------------------------------------------------------


def stored_part_size() -> int:
    """The stored size of a 64 MiB incompressible part, from the real encoder."""
    identity = ChunkIdentity(ChunkKind.OBJECT_PART, PLAN, DATASET, GENERATION, 0, 0, b"\x01" * 16)
    return (
        ChunkEncoder(3).encode(os.urandom(PART_SIZE), identity, DataKey(os.urandom(32))).stored_size
    )


def object_name(i: int) -> str:
    day = f"2024-{1 + i // 90_000 % 12:02d}-{1 + i // 3_000 % 28:02d}"
    return f"site-{i % 7:02d}/cam-{i % 977:03d}/{day}/clip-{i:09d}.mp4"


def generate(total: int, shards: int, stored_size: int, sample: Sample) -> Iterator[CommittedChunk]:
    """`total` committed object parts in listing order, with the fields the pipeline sets."""
    rng = random.Random(SEED)
    picked = set(random.Random(SEED + 1).sample(range(total), min(LOOKUP_KEYS, total)))
    sample.per_shard = [0] * shards
    sample.inventories = {shard: {} for shard in range(shards)}
    urandom = os.urandom
    n = 0
    i = 0
    while n < total:
        parts = min(rng.randint(1, MAX_PARTS), total - n)
        name = object_name(i)
        shard = shard_of(name.encode(), shards)
        tag = xxhash.xxh3_128_digest(name.encode())  # stands in for the keyed 16-byte tag
        size = parts * PART_SIZE
        version = f"{size}:{1_700_000_000_000_000_000 + i * 1_000_003_117}"
        sample.inventories[shard][name] = ObjectEntry(version, size)
        sample.per_shard[shard] += parts
        for part in range(parts):
            okey = object_part_key(DATASET, GENERATION, shard, tag, part)
            if n in picked:
                sample.keys.append(okey)
                sample.missing.append(
                    object_part_key(DATASET, GENERATION, shard, tag, part + 500_000)
                )
            digests = urandom(32).hex()
            yield CommittedChunk(
                dataset=DATASET,
                generation=GENERATION,
                shard=shard,
                object_key=okey,
                sequence=part,
                name=name,
                records=0,
                plain_size=PART_SIZE,
                stored_size=stored_size,
                plain_xxh3=digests[:32],
                stored_xxh3=digests[32:],
                source_end=0,
                source_version=version,
            )
            n += 1
        i += 1


# --- fill -------------------------------------------------------------------------------


def fill(
    store: StateDB, total: int, shards: int, batch_size: int, console: Console
) -> tuple[Fill, Sample]:
    result, sample = Fill(), Sample()
    store.open_generation(DATASET, GENERATION, "bulk")
    started = time.perf_counter()
    for shard in range(shards):
        store.set_shard_status(DATASET, GENERATION, shard, ShardStatus.RUNNING)
    result.running_s = time.perf_counter() - started
    console.print(f"marked {shards:,} shards running in {result.running_s:.2f} s")

    stored_size = stored_part_size()
    bounds = [math.ceil(total * k / 10) for k in range(1, 11)]
    dec_chunks, dec_commit, dec_started = 0, 0.0, time.perf_counter()
    batch: list[CommittedChunk] = []
    fill_started = time.perf_counter()

    def commit() -> None:
        nonlocal dec_chunks, dec_commit, dec_started
        t0 = time.perf_counter()
        store.commit_chunks(batch)
        dt = time.perf_counter() - t0
        result.batch_s.append(dt)
        result.commit_s += dt
        result.chunks += len(batch)
        result.batches += 1
        dec_chunks += len(batch)
        dec_commit += dt
        batch.clear()
        k = len(result.deciles)
        if k < 10 and result.chunks >= bounds[k]:
            now = time.perf_counter()
            d = Decile((k + 1) * 10, result.chunks, dec_chunks, dec_commit, now - dec_started)
            result.deciles.append(d)
            console.print(
                f"{d.upto_pct:3d} %  {result.chunks:>12,} rows  commit {d.commit_rate:>9,.0f}"
                f" chunks/s  (with generation {d.wall_rate:>8,.0f}/s)"
                f"  elapsed {now - fill_started:7.1f} s"
            )
            dec_chunks, dec_commit, dec_started = 0, 0.0, now

    for chunk in generate(total, shards, stored_size, sample):
        batch.append(chunk)
        if len(batch) >= batch_size:
            commit()
    if batch:
        commit()  # the engine's final flush
    result.wall_s = time.perf_counter() - fill_started
    result.objects = sum(len(inv) for inv in sample.inventories.values())
    result.shard_min, result.shard_max = min(sample.per_shard), max(sample.per_shard)

    # Close-out, as the engine does once all shards finished: read each shard's chunks to seal
    # its manifest, then complete the shard with its inventory in one transaction.
    for shard in range(shards):
        t0 = time.perf_counter()
        chunks = list(store.shard_chunks(DATASET, GENERATION, shard))
        t1 = time.perf_counter()
        if len(chunks) != sample.per_shard[shard]:
            raise SystemExit(
                f"shard {shard}: {len(chunks)} chunks read, {sample.per_shard[shard]} committed"
            )
        inventory = sample.inventories[shard]
        blob = pack_objects_map(inventory)
        result.inventory_bytes += len(blob)
        t2 = time.perf_counter()
        store.complete_shard(
            DATASET,
            GENERATION,
            shard,
            manifest_key=manifest_key(DATASET, GENERATION, shard),
            manifest_xxh3=os.urandom(16).hex(),
            base=True,
            inventory=blob,
            live_records=0,
            digest=to_hex(objects_digest(inventory)),
        )
        result.manifest_read_s += t1 - t0
        result.complete_s += time.perf_counter() - t2
    sample.inventories = {}
    console.print(
        f"completed {shards:,} shards: manifest reads {result.manifest_read_s:.1f} s,"
        f" complete_shard {result.complete_s:.1f} s"
    )
    return result, sample


# --- look-ups ---------------------------------------------------------------------------


def db_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def evict(db: Path) -> bool:
    """Drop the store's files from the OS page cache (best effort; the store must be closed)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in db_files(db):
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def timings(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median_s": percentile(values, 0.5),
        "p95_s": percentile(values, 0.95),
        "max_s": max(values),
        "total_s": sum(values),
    }


def timed_each(items: Sequence[Any], call: Callable[[Any], object]) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - t0)
    return out


def measure_lookups(db: Path, shards: int, sample: Sample) -> dict[str, Any]:
    """Each look-up first on a store just reopened with its files evicted (cold), then again."""
    picked = random.Random(SEED + 2).sample(range(shards), min(RESUME_SHARDS, shards))
    out: dict[str, Any] = {"shards": picked}

    def read_shard(shard: int) -> None:
        if not list(store.shard_chunks(DATASET, GENERATION, shard)):
            raise SystemExit(f"shard {shard}: no chunks read back")

    def hit(key: str) -> None:
        if store.committed_chunk(DATASET, GENERATION, key) is None:
            raise SystemExit(f"{key}: committed but not found")

    def miss(key: str) -> None:
        if store.committed_chunk(DATASET, GENERATION, key) is not None:
            raise SystemExit(f"{key}: never committed but found")

    out["evicted"] = evict(db)
    with StateDB.sqlite_file(db) as store:
        out["shard_chunks_cold"] = timings(timed_each(picked, read_shard))
        out["shard_chunks_warm"] = timings(timed_each(picked, read_shard))
        out["rows_per_shard"] = sum(sample.per_shard[s] for s in picked) / len(picked)
    evict(db)
    with StateDB.sqlite_file(db) as store:
        out["committed_chunk_cold"] = timings(timed_each(sample.keys, hit))
        out["committed_chunk_warm"] = timings(timed_each(sample.keys, hit))
        out["committed_chunk_miss"] = timings(timed_each(sample.missing, miss))
    return out


def measure_status(db: Path, shards: int, total: int, site: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def progress() -> None:
        rows = store.shard_progress(DATASET, GENERATION)
        if len(rows) != shards or sum(r.chunks for r in rows) != total:
            raise SystemExit("shard_progress does not add up to the committed chunks")
        if any(r.status is not ShardStatus.COMPLETE for r in rows):
            raise SystemExit("shard_progress shows a shard that is not complete")

    evict(db)
    with StateDB.sqlite_file(db) as store:
        out["shard_progress_cold_s"] = timed_each([None], lambda _: progress())[0]
        warm = timed_each([None] * STATUS_REPEAT, lambda _: progress())
        out["shard_progress_warm_s"] = percentile(warm, 0.5)
    plan = site / "plan.yaml"
    plan.write_text(plan_yaml(shards), encoding="utf-8")
    cli = [sys.executable, "-m", "migrator", "status", plan.name, "--json"]
    walls: list[float] = []
    for _ in range(STATUS_REPEAT):
        t0 = time.perf_counter()
        done = subprocess.run(cli, cwd=site, capture_output=True, check=False)
        walls.append(time.perf_counter() - t0)
        if done.returncode != 0:
            out["cli_error"] = done.stderr.decode(errors="replace")[-2000:]
            return out
    doc = orjson.loads(done.stdout)
    ds = doc["datasets"][0]
    out["cli_ok"] = ds["chunks"] == total and ds["shards_complete"] == shards
    out["cli_s"] = percentile(walls, 0.5)
    out["cli_runs_s"] = walls
    out["cli_json_bytes"] = len(done.stdout)
    return out


def plan_yaml(shards: int) -> str:
    """A minimal plan whose state_dir is the filled store (paths relative to the plan)."""
    return (
        "version: 1\n"
        f"name: {PLAN}\n"
        "state_dir: state\n"
        f"chunk_size: {PART_SIZE // MiB}MiB\n"
        "keys: {provider: local, kek_file: kek.key}\n"
        "destination: {kind: local, path: dest, prefix: scale/}\n"
        "datasets:\n"
        f"  - {{name: {DATASET}, kind: objects, source: {{kind: local, path: source}},"
        f" shards: {shards}}}\n"
    )


# --- size -------------------------------------------------------------------------------


def file_sizes(db: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in db_files(db) if p.exists()}


def table_sizes(db: Path) -> dict[str, int]:
    """Bytes per table and index (SQLite's dbstat), if this SQLite has it."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {str(name): int(size) for name, size in sorted(rows, key=lambda r: -r[1])}


# --- report -----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def verdict(result: dict[str, Any]) -> str:
    f, r, s, z = result["fill"], result["resume"], result["status"], result["size"]
    chunks = f["chunks"]
    needed = LINK_BYTES_S / PART_SIZE
    headroom = f["commit_rate"] / needed
    transfer_s = chunks * PART_SIZE / LINK_BYTES_S
    share = f["commit_s"] / transfer_s
    first, last = f["deciles"][0]["commit_rate"], f["deciles"][-1]["commit_rate"]
    ratio = last / first if first else 0.0
    trend = "no slowdown" if ratio >= 0.9 else "a slowdown with table size"
    hit = r["committed_chunk_cold"]["median_s"]
    warm_hit = r["committed_chunk_warm"]["median_s"]
    parts = []
    parts.append(
        f"At {chunks:,} chunks ({format_size(chunks * PART_SIZE)} at 64 MiB) the state store"
        f" commits {f['commit_rate']:,.0f} chunks/s sustained, {headroom:,.0f}x the"
        f" {needed:.1f} chunks/s a 10 Gbit/s migration produces; all commits together take"
        f" {f['commit_s'] / 60:.1f} min against {transfer_s / 86400:.1f} days of transfer"
        f" ({share:.3%}); the last tenth of the rows commits at {last / first:.2f}x the rate"
        f" of the first ({last:,.0f} vs {first:,.0f} chunks/s, {trend})."
    )
    parts.append(
        f"A resumed shard reads its ~{r['rows_per_shard']:,.0f} chunks in"
        f" {ms(r['shard_chunks_cold']['median_s'])} median, {ms(r['shard_chunks_cold']['p95_s'])}"
        f" p95 cold ({ms(r['shard_chunks_warm']['median_s'])} warm); a resumed objects run's"
        f" per-part committed_chunk costs {us(hit)} cold, {us(warm_hit)} warm, so asking for"
        f" every part of the dataset would take ~{chunks * warm_hit / 60:.1f} min warm"
        f" (~{chunks * hit / 60:.0f} min if every look-up were cold)."
    )
    status = f"`status` (shard_progress over {result['params']['shards']:,} shards) takes"
    status += f" {s['shard_progress_warm_s']:.1f} s warm, {s['shard_progress_cold_s']:.1f} s cold"
    if "cli_s" in s:
        status += f", the CLI end to end {s['cli_s']:.1f} s"
    parts.append(status + ".")
    parts.append(
        f"The database is {format_size(z['open_bytes'])} with its WAL"
        f" ({z['open_bytes'] / chunks:,.0f} B per chunk; {format_size(z['closed_bytes'])}"
        " once closed)."
    )
    return " ".join(parts)


def print_report(console: Console, result: dict[str, Any]) -> None:
    f, r, s, z = result["fill"], result["resume"], result["status"], result["size"]
    m, p = result["machine"], result["params"]
    deciles = Table(title="commit rate by table size", title_justify="left")
    for column in ("up to", "rows at end", "commit chunks/s", "with generation /s", "vs first"):
        deciles.add_column(column, justify="right")
    first = f["deciles"][0]["commit_rate"]
    for d in f["deciles"]:
        deciles.add_row(
            f"{d['upto_pct']} %",
            f"{d['rows_at_end']:,}",
            f"{d['commit_rate']:,.0f}",
            f"{d['wall_rate']:,.0f}",
            f"{d['commit_rate'] / first:.2f}",
        )
    console.print(deciles)

    table = Table(title="state store at scale", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    bs = f["batch_s"]
    table.add_row(
        "commit rate (sustained)",
        f"{f['commit_rate']:,.0f} chunks/s",
        f"{f['chunks']:,} chunks in {f['batches']:,} batches of {p['batch']}",
    )
    table.add_row(
        "commit_chunks per batch",
        f"{ms(bs['median_s'])} / {ms(bs['p99_s'])}",
        f"median / p99, max {ms(bs['max_s'])}",
    )
    table.add_row("fill wall time", f"{f['wall_s']:,.1f} s", "commits plus generating the rows")
    table.add_row("set running, all shards", f"{f['running_s']:.2f} s", f"{p['shards']:,} shards")
    table.add_row(
        "manifest reads, all shards",
        f"{f['manifest_read_s']:,.1f} s",
        "list(shard_chunks) of every shard at close-out",
    )
    table.add_row(
        "complete_shard, all shards",
        f"{f['complete_s']:,.1f} s",
        f"with inventories ({format_size(f['inventory_bytes'])} in all)",
    )
    for label, key in (("cold", "shard_chunks_cold"), ("warm", "shard_chunks_warm")):
        t = r[key]
        table.add_row(
            f"resume: shard_chunks ({label})",
            f"{ms(t['median_s'])} / {ms(t['p95_s'])}",
            f"median / p95 of {t['n']} shards, ~{r['rows_per_shard']:,.0f} rows each",
        )
    for label, key in (
        ("cold", "committed_chunk_cold"),
        ("warm", "committed_chunk_warm"),
        ("miss", "committed_chunk_miss"),
    ):
        t = r[key]
        table.add_row(
            f"resume: committed_chunk ({label})",
            f"{us(t['median_s'])} / {us(t['p95_s'])}",
            f"median / p95 of {t['n']:,} keys",
        )
    table.add_row(
        "status: shard_progress", f"{s['shard_progress_warm_s']:.2f} s", "warm, median of 3"
    )
    table.add_row(
        "status: shard_progress (cold)",
        f"{s['shard_progress_cold_s']:.2f} s",
        "store reopened, files evicted",
    )
    if "cli_s" in s:
        table.add_row(
            "status: CLI --json",
            f"{s['cli_s']:.2f} s",
            f"end to end, median of {len(s['cli_runs_s'])}, {format_size(s['cli_json_bytes'])}"
            f" of JSON, {'totals match' if s['cli_ok'] else 'TOTALS DO NOT MATCH'}",
        )
    else:
        table.add_row("status: CLI --json", "failed", s.get("cli_error", "")[-200:])
    table.add_row(
        "database size (open)",
        format_size(z["open_bytes"]),
        " + ".join(f"{name} {format_size(n)}" for name, n in z["open_files"].items()),
    )
    table.add_row("bytes per chunk", f"{z['open_bytes'] / f['chunks']:,.0f} B", "db + WAL + shm")
    table.add_row(
        "database size (closed)",
        format_size(z["closed_bytes"]),
        f"{z['closed_bytes'] / f['chunks']:,.0f} B per chunk, WAL checkpointed",
    )
    for name, n in list(z["tables"].items())[:4]:
        table.add_row(f"  {name}", format_size(n), f"{n / f['chunks']:,.0f} B per chunk")
    console.print(table)
    console.print(
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_total_mib']:,} MiB RAM,"
        f" Python {m['python']}, SQLite {m['sqlite']}; shards hold"
        f" {f['shard_min']:,}..{f['shard_max']:,} chunks ({f['objects']:,} objects)"
    )
    if not r["evicted"]:
        console.print("note: posix_fadvise is unavailable: 'cold' only means a reopened store")
    else:
        console.print(
            "note: 'cold' = store reopened after its files were dropped from the OS page cache"
            " (posix_fadvise DONTNEED; a VM's host may still cache them)"
        )
    console.print()
    console.print(result["verdict"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="chunk records")
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="shards")
    parser.add_argument("--batch", type=int, default=COMMIT_BATCH, help="chunks per commit")
    parser.add_argument("--workdir", type=Path, help=f"where {SITE}/ goes (default: temp)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_CHUNKS:,} chunks, {QUICK_SHARDS} shards",
    )
    parser.add_argument("--keep", action="store_true", help="keep the filled store")
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.shards = QUICK_CHUNKS, QUICK_SHARDS
    if args.shards < 1 or args.batch < 1 or args.chunks < 10 * args.batch:
        parser.error("need --shards >= 1, --batch >= 1 and --chunks >= 10 x --batch")
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-scale-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    site = workdir / SITE
    shutil.rmtree(site, ignore_errors=True)
    need = max(MIN_FREE, int(args.chunks * FREE_BYTES_PER_CHUNK))
    free = shutil.disk_usage(workdir).free
    if free < need:
        console.print(
            f"refusing to start: {format_size(free)} free under {workdir}, and"
            f" {args.chunks:,} chunks need at least {format_size(need)}; free some space or"
            " pass --workdir on a larger disk",
            style="red",
        )
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return 2
    db = site / "state" / STATE_FILE
    console.print(
        f"filling {db} with {args.chunks:,} chunks over {args.shards:,} shards,"
        f" {args.batch} per commit ({format_size(free)} free)"
    )
    try:
        with StateDB.sqlite_file(db) as store:
            filled, sample = fill(store, args.chunks, args.shards, args.batch, console)
            open_files = file_sizes(db)
        closed_files = file_sizes(db)
        console.print("timing resume look-ups ...")
        resume = measure_lookups(db, args.shards, sample)
        console.print("timing status ...")
        status = measure_status(db, args.shards, args.chunks, site)
        console.print("measuring tables ...")
        tables = table_sizes(db)
        fill_doc = asdict(filled)
        fill_doc["batch_s"] = {
            "median_s": percentile(filled.batch_s, 0.5),
            "p99_s": percentile(filled.batch_s, 0.99),
            "max_s": max(filled.batch_s),
        }
        fill_doc["commit_rate"] = filled.commit_rate
        for doc, d in zip(fill_doc["deciles"], filled.deciles, strict=True):
            doc["commit_rate"], doc["wall_rate"] = d.commit_rate, d.wall_rate
        result: dict[str, Any] = {
            "machine": machine_info(sqlite=sqlite3.sqlite_version),
            "params": {
                "chunks": args.chunks,
                "shards": args.shards,
                "batch": args.batch,
                "part_size": PART_SIZE,
                "plain_bytes": args.chunks * PART_SIZE,
            },
            "fill": fill_doc,
            "resume": resume,
            "status": status,
            "size": {
                "open_files": open_files,
                "open_bytes": sum(open_files.values()),
                "closed_files": closed_files,
                "closed_bytes": sum(closed_files.values()),
                "tables": tables,
            },
        }
        result["verdict"] = verdict(result)
        print_report(console, result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"results written to {args.json}")
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            console.print(f"store kept: {db}")
    return 0 if "cli_s" in status else 1


if __name__ == "__main__":
    sys.exit(main())

"""Throughput benchmark: the hot loop's ceiling, then `migrator run` end to end, on the same data.

    python bench/bench.py [--size 512MiB] [--level 3] [--json out.json] [--workdir DIR]
                          [--quick] [--ceiling-only] [--no-peers] [--keep]

Records (JSONL profiles) and objects (incompressible videos) each get --size of data. The
ceiling is ChunkEncoder over 16 MiB in-memory chunks on every core; each end-to-end run is a
fresh `migrator run` of a one-dataset plan, timed wall-clock, with its peak RSS. Then the peers
on the same data (see peers.py): `restic backup`, `rclone copy` to a crypt remote, and
`migrator run` into S3 on a local moto server next to `aws s3 cp --recursive` of the same
encrypted bytes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import orjson
import peers
import psutil
import xxhash
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from machine import machine_info
from rich.console import Console
from rich.table import Table

from migrator.codec.chunk import ChunkEncoder
from migrator.codec.identity import ChunkIdentity, ChunkKind
from migrator.demo.synth import generate_objects, generate_records_file
from migrator.keys.datakey import DataKey
from migrator.sizes import MiB, format_size, parse_size

CHUNK_SIZE = 16 * MiB
SHARDS = 16
SEED = 7
RECORD_FILES = 8
PASSES = 3
CEILING_CHUNKS = 64  # the ceiling holds at most 1 GiB of one data type in memory
PRIMITIVE_CHUNKS = 8
OTHER_LOAD_WARN_CPUS = 0.25  # single-thread primitives time at most this many chunks (128 MiB)
RSS_POLL_S = 0.02
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"

# End-to-end share of the ceiling: records pay for key extraction, objects should not.
TARGETS = {"records": 0.60, "objects": 0.70}
PRODUCT_TARGETS = {"records": 0.60, "objects": 0.85}
KINDS = ("records", "objects")

WARM_NOTE = (
    "the OS page cache cannot be dropped here; every source file was read once, untimed, "
    "so the ceiling and the runs both read from memory"
)


@dataclass
class Ceiling:
    mb_s: float  # plaintext MB/s (10**6 bytes), best of PASSES, all cores
    passes_s: list[float]
    plain_bytes: int
    stored_bytes: int
    chunks: int
    threads: int
    cpu_per_wall: float  # this process's CPU seconds per wall second over the timed passes
    other_load_cpus: float  # CPUs busy with other processes meanwhile

    @property
    def compression(self) -> float:
        return self.plain_bytes / self.stored_bytes

    @property
    def contended(self) -> bool:
        """Other processes took a noticeable share of the CPUs during the timed passes."""
        return self.other_load_cpus > OTHER_LOAD_WARN_CPUS


@dataclass
class Run:
    ok: bool
    exit_code: int
    wall_s: float
    source_bytes: int
    dest_bytes: int
    peak_rss_bytes: int
    other_load_cpus: float  # CPUs busy with processes other than the run and this benchmark
    log: str  # file name of the log, in the workdir's runs folder

    @property
    def mb_s(self) -> float:
        return self.source_bytes / self.wall_s / 1e6 if self.wall_s else 0.0

    @property
    def compression(self) -> float:
        return self.source_bytes / self.dest_bytes if self.dest_bytes else 0.0


# --- data -------------------------------------------------------------------------------


def _write_records_part(path: Path, size: int, first_index: int) -> int:
    return generate_records_file(path, size, SEED, first_index=first_index)


def prepare_data(data_dir: Path, size: int, console: Console) -> None:
    """Generate records and objects (`size` each) unless data for this size is already there."""
    marker = data_dir / "bench-data.json"
    wanted = {"size": size, "seed": SEED, "record_files": RECORD_FILES}
    if marker.exists() and orjson.loads(marker.read_bytes()) == wanted:
        console.print(f"reusing generated data ({format_size(size)} each)")
        return
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.perf_counter()
    records = data_dir / "records"
    part = size // RECORD_FILES
    sizes = [part] * (RECORD_FILES - 1) + [size - part * (RECORD_FILES - 1)]
    # Disjoint index ranges keep user ids unique while the files are written in parallel.
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(
            pool.map(
                _write_records_part,
                [records / f"profiles-{i:04d}.jsonl" for i in range(RECORD_FILES)],
                sizes,
                [i * 10**9 for i in range(RECORD_FILES)],
            )
        )
    objects = generate_objects(data_dir / "objects", size, SEED)
    marker.write_bytes(orjson.dumps(wanted))
    console.print(
        f"generated {sum(counts):,} profiles and {len(objects):,} videos"
        f" ({format_size(size)} each) in {time.perf_counter() - started:.1f} s"
    )


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _files(folder))


def warm_read(folder: Path) -> None:
    for path in _files(folder):
        with path.open("rb") as f:
            while f.read(8 * MiB):
                pass


def chunks_of(folder: Path) -> Iterator[bytes]:
    """The files' bytes, concatenated and cut into CHUNK_SIZE pieces (the last may be short)."""
    buffer = bytearray()
    for path in _files(folder):
        with path.open("rb") as f:
            while block := f.read(CHUNK_SIZE - len(buffer)):
                buffer += block
                if len(buffer) == CHUNK_SIZE:
                    yield bytes(buffer)
                    buffer.clear()
    if buffer:
        yield bytes(buffer)


# --- ceiling ----------------------------------------------------------------------------


def measure_ceiling(chunks: Sequence[bytes], level: int) -> Ceiling:
    """ChunkEncoder on every core, one encoder per thread; best of PASSES after a warm-up."""
    threads = os.cpu_count() or 1
    key = DataKey(os.urandom(32))
    local = threading.local()

    def encode(seq: int) -> int:
        encoder = getattr(local, "encoder", None)
        if encoder is None:
            encoder = local.encoder = ChunkEncoder(level)
        identity = ChunkIdentity(ChunkKind.RECORDS, "bench", "d", 1, 0, seq)
        return encoder.encode(chunks[seq], identity, key).stored_size

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(encode, range(min(len(chunks), 2 * threads))))  # warm-up
        passes: list[float] = []
        stored = 0
        own_before, busy_before = _own_cpu_seconds(), _busy_cpu_seconds()
        for _ in range(PASSES):
            started = time.perf_counter()
            stored = sum(pool.map(encode, range(len(chunks))))
            passes.append(time.perf_counter() - started)
        own = _own_cpu_seconds() - own_before
        other = max(0.0, _busy_cpu_seconds() - busy_before - own)
    plain = sum(len(c) for c in chunks)
    wall = sum(passes)
    return Ceiling(
        mb_s=plain / min(passes) / 1e6,
        passes_s=passes,
        plain_bytes=plain,
        stored_bytes=stored,
        chunks=len(chunks),
        threads=threads,
        cpu_per_wall=own / wall,
        other_load_cpus=other / wall,
    )


def _own_cpu_seconds(*, with_children: bool = False) -> float:
    """CPU seconds of this process (and, if asked, of its children that have been waited for)."""
    times = os.times()
    children = times.children_user + times.children_system if with_children else 0.0
    return times.user + times.system + children


def _busy_cpu_seconds() -> float:
    """Non-idle CPU seconds of the whole machine, all processes together."""
    times = psutil.cpu_times()._asdict()
    # idle and iowait are not work; Linux already counts guest time inside user time.
    not_busy = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(value for name, value in times.items() if name not in not_busy))


def measure_primitive(chunks: Sequence[bytes], work: Callable[[bytes], object]) -> float:
    """Single-thread MB/s of `work` over up to PRIMITIVE_CHUNKS chunks, best of two."""
    sample = chunks[:PRIMITIVE_CHUNKS]
    work(sample[0])
    best = min(_timed(work, sample) for _ in range(2))
    return sum(len(c) for c in sample) / best / 1e6


def _timed(work: Callable[[bytes], object], chunks: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for chunk in chunks:
        work(chunk)  # the result is dropped at once, as the ceiling's encoder output is
    return time.perf_counter() - started


def primitives(kind: str, chunks: Sequence[bytes], level: int) -> dict[str, float]:
    """Single-thread MB/s of each stage alone; AES-GCM and xxh3 do not depend on the data."""
    result = {f"zstd_{kind}": measure_primitive(chunks, zstandard.ZstdCompressor(level).compress)}
    if kind == "records":
        # A fixed nonce is fine for timing throw-away ciphertext; the product never reuses one.
        aead = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        result["aes_gcm"] = measure_primitive(chunks, lambda c: aead.encrypt(nonce, c, None))
        result["xxh3_128"] = measure_primitive(chunks, xxhash.xxh3_128_digest)
    return result


# --- end to end -------------------------------------------------------------------------


LOCAL_DESTINATION = "{kind: local, path: dest, prefix: bench/}"


def plan_yaml(kind: str, level: int, destination: str = LOCAL_DESTINATION) -> str:
    if kind == "records":
        dataset = (
            "{name: profiles, kind: records, format: jsonl,"
            " source: {kind: local, path: ../../data/records}, key: user_id, shards: 16}"
        )
    else:
        dataset = (
            "{name: videos, kind: objects,"
            " source: {kind: local, path: ../../data/objects}, shards: 16}"
        )
    return (
        "version: 1\n"
        "name: bench\n"
        "state_dir: state\n"
        f"compression_level: {level}\n"
        f"chunk_size: {CHUNK_SIZE // MiB}MiB\n"
        "memory_budget: 512MiB\n"
        "keys: {provider: local, kek_file: kek.key}\n"
        f"destination: {destination}\n"
        "datasets:\n"
        f"  - {dataset}\n"
    )


def run_migration(workdir: Path, kind: str, level: int) -> Run:
    """A fresh `migrator run` of a one-dataset plan: wall-clock time and peak RSS of its tree."""
    run_dir = workdir / "runs" / kind
    shutil.rmtree(run_dir, ignore_errors=True)  # old state would make the run a no-op resume
    run_dir.mkdir(parents=True)
    migrator = [sys.executable, "-m", "migrator"]
    (run_dir / "plan.yaml").write_text(plan_yaml(kind, level), encoding="utf-8")
    log_name = f"{kind}.log"
    with (run_dir.parent / log_name).open("wb") as log:
        keys = subprocess.run(
            [*migrator, "keys", "init", "kek.key"], cwd=run_dir, stdout=log, stderr=log
        )
        exit_code, peak, wall, other = keys.returncode, 0, 0.0, 0.0
        if exit_code == 0:
            timed = timed_child([*migrator, "run", "plan.yaml"], cwd=run_dir, log=log)
            exit_code, peak = timed.exit_code, timed.peak_rss_bytes
            wall, other = timed.wall_s, timed.other_load_cpus
    return Run(
        ok=exit_code == 0,
        exit_code=exit_code,
        wall_s=wall,
        source_bytes=tree_bytes(workdir / "data" / kind),
        dest_bytes=tree_bytes(run_dir / "dest") if (run_dir / "dest").exists() else 0,
        peak_rss_bytes=peak,
        other_load_cpus=other,
        log=log_name,
    )


def timed_child(
    argv: Sequence[str],
    *,
    cwd: Path,
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> peers.Timed:
    """Run argv (output to log): wall-clock time, peak RSS of its tree, and the other load.

    The other load is the machine's busy CPU time that is neither this process's nor its
    waited-for children's (the child and whatever it waited for), per wall second.
    """
    log.flush()
    ours_before = _own_cpu_seconds(with_children=True)
    busy_before = _busy_cpu_seconds()
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    exit_code, peak = _wait_with_peak_rss(child, timeout)
    wall = time.perf_counter() - started
    ours = _own_cpu_seconds(with_children=True) - ours_before
    other = max(0.0, _busy_cpu_seconds() - busy_before - ours) / wall
    return peers.Timed(exit_code, wall, peak, other)


def _wait_with_peak_rss(
    child: subprocess.Popen[bytes], timeout: float | None = None
) -> tuple[int, int]:
    """Poll the child's process tree (summed RSS) until it exits: the run's own peak.

    Not ru_maxrss: on Linux a child's maxrss starts from the parent's RSS at fork/exec time, so
    it would report this benchmark's memory (the in-memory chunks) instead of the run's.
    After `timeout` seconds the child and its descendants are killed.
    """
    parent = psutil.Process(child.pid)
    deadline = time.monotonic() + timeout if timeout is not None else None
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss(parent))
        if deadline is not None and time.monotonic() > deadline:
            _kill_tree(parent)
            child.wait()
            break
        time.sleep(RSS_POLL_S)
    return child.returncode, peak


def _kill_tree(parent: psutil.Process) -> None:
    try:
        processes = [*parent.children(recursive=True), parent]
    except psutil.Error:
        processes = [parent]
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue


def _tree_rss(parent: psutil.Process) -> int:
    total = 0
    try:
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue  # exited between listing and sampling
    return total


# --- peers ------------------------------------------------------------------------------

PEERS_NOTE = (
    "peer rows: restic and rclone MB/s count source bytes; the s3 rows count stored (encrypted)"
    " bytes, each upload into a fresh moto server on 127.0.0.1, aws s3 cp uploading run(kind)'s"
    " local output. migrator × = migrator's MB/s / the row's (run(kind) for restic and rclone,"
    " s3 migrator(kind) for aws s3 cp): above 1.00 migrator is faster"
)


@dataclass
class Peers:
    tools: dict[str, peers.Tool]
    runs: list[peers.PeerRun]
    messages: list[str]  # rows that could not be measured, and why


def run_peers(workdir: Path, level: int, runs: dict[str, Run], console: Console) -> Peers:
    """restic, rclone crypt, then migrator into S3 on moto and `aws s3 cp` of the same bytes."""
    logs = workdir / "runs" / "peers"
    logs.mkdir(parents=True, exist_ok=True)
    work = workdir / "peers"
    work.mkdir(exist_ok=True)
    data = workdir / "data"
    console.print("finding restic, rclone and the AWS CLI (installing them if missing) ...")
    with (logs / "install.log").open("wb") as log:
        tools = peers.find_apt_tools(log)
        tools["aws"] = peers.find_awscli(log)
    for tool in tools.values():
        console.print(tool.describe(), markup=False)
    result = Peers(tools, [], [])
    restic, rclone, aws = tools["restic"], tools["rclone"], tools["aws"]
    for kind in KINDS:
        if restic.path is not None:
            console.print(f"restic backup of {kind} ...")
            result.runs.append(peers.run_restic(restic, timed_child, data, kind, work, logs))
        if rclone.path is not None:
            console.print(f"rclone copy of {kind} to a crypt remote ...")
            result.runs.append(peers.run_rclone(rclone, timed_child, data, kind, work, logs))
    migrator = [sys.executable, "-m", "migrator"]
    for kind in KINDS:
        console.print(f"running migrator on {kind} into S3 on moto ...")
        try:
            result.runs.append(
                peers.run_migrator_s3(
                    timed_child,
                    migrator,
                    lambda destination, k=kind: plan_yaml(k, level, destination),
                    kind,
                    workdir,
                    logs,
                )
            )
        except Exception as exc:  # moto or its client: the row is skipped, not the report
            result.messages.append(f"s3 migrator({kind}) skipped: {exc}")
        local = runs.get(kind)
        if aws.path is None:
            continue
        if local is None or not local.ok:
            result.messages.append(
                f"s3 aws s3 cp({kind}) skipped: run({kind}) failed, so there are no encrypted"
                " bytes to upload"
            )
            continue
        console.print(f"aws s3 cp of run({kind})'s output into S3 on moto ...")
        encrypted = workdir / "runs" / kind / "dest"
        try:
            result.runs.append(
                peers.run_aws_cp(aws, timed_child, encrypted, local.source_bytes, kind, work, logs)
            )
        except Exception as exc:
            result.messages.append(f"s3 aws s3 cp({kind}) skipped: {exc}")
    return result


def migrator_multiple(
    peer: peers.PeerRun, runs: dict[str, Run], others: Sequence[peers.PeerRun]
) -> float | None:
    """Migrator's MB/s over the peer's on the same data and the same counted bytes, or None."""
    if not peer.ok or not peer.mb_s:
        return None
    if peer.target == "local":
        run = runs.get(peer.kind)
        return run.mb_s / peer.mb_s if run is not None and run.ok else None
    if peer.tool == "aws s3 cp":
        for other in others:
            if (other.tool, other.target, other.kind) == ("migrator", "s3", peer.kind) and other.ok:
                return other.mb_s / peer.mb_s
    return None


def s3_vs_local(peer: peers.PeerRun, runs: dict[str, Run]) -> float | None:
    """migrator into S3 over migrator local to local, both in source MB/s."""
    run = runs.get(peer.kind)
    if peer.tool != "migrator" or not peer.ok or run is None or not run.ok or not run.mb_s:
        return None
    return peer.source_bytes / peer.wall_s / 1e6 / run.mb_s


# --- report -----------------------------------------------------------------------------


def measure_disk_write(folder: Path, total: int, threads: int) -> float:
    """MB/s of the destination's disk for what a local destination does per chunk: write a
    16 MiB file, fsync it, rename it into place, fsync the folder, on `threads` threads."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(CHUNK_SIZE)
    count = max(threads, total // CHUNK_SIZE)

    def write(i: int) -> None:
        tmp, final = folder / f".{i}.tmp", folder / f"{i}.bin"
        with tmp.open("wb") as fh:
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, range(count)))
    seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return count * CHUNK_SIZE / seconds / 1e6


def _verdict(ratio: float, kind: str) -> str:
    return "PASS" if ratio >= TARGETS[kind] else "MISS"


def print_report(
    console: Console,
    machine: dict[str, object],
    ceilings: dict[str, Ceiling],
    prims: dict[str, float],
    runs: dict[str, Run],
    disk_mb_s: float | None = None,
    peer_result: Peers | None = None,
) -> None:
    warnings: list[str] = []
    table = Table(title="migrator throughput", title_justify="left")
    columns = ["row", "MB/s", "ratio", "target", "compression", "peak RSS MiB"]
    if peer_result is not None:
        columns.append("migrator ×")
    for column in columns:
        table.add_column(column, justify="left" if column == "row" else "right")
    blank = [""] if peer_result is not None else []
    for kind in KINDS:
        c = ceilings[kind]
        table.add_row(
            f"ceiling({kind})", f"{c.mb_s:,.0f}", "1.00", "", f"{c.compression:.2f}x", "", *blank
        )
        if c.contended:
            warnings.append(
                f"other processes kept {c.other_load_cpus:.2f} CPUs busy during ceiling({kind}):"
                " it, and the ratios to it, are unreliable"
            )
    for kind, run in runs.items():
        if run.other_load_cpus > OTHER_LOAD_WARN_CPUS:
            warnings.append(
                f"other processes kept {run.other_load_cpus:.2f} CPUs busy during run({kind}):"
                " its figures are unreliable"
            )
        if not run.ok:
            table.add_row(f"run({kind})", "FAILED", f"exit {run.exit_code}", "", "", "", *blank)
            continue
        ratio = run.mb_s / ceilings[kind].mb_s
        table.add_row(
            f"run({kind})",
            f"{run.mb_s:,.0f}",
            f"{ratio:.2f} {_verdict(ratio, kind)}",
            f">={TARGETS[kind]:.2f} (product {PRODUCT_TARGETS[kind]:.2f})",
            f"{run.compression:.2f}x",
            f"{run.peak_rss_bytes / MiB:,.0f}",
            *blank,
        )
    for peer in peer_result.runs if peer_result is not None else []:
        if peer.other_load_cpus > OTHER_LOAD_WARN_CPUS:
            warnings.append(
                f"other processes kept {peer.other_load_cpus:.2f} CPUs busy during {peer.label}:"
                " its figures are unreliable"
            )
        if not peer.ok:
            table.add_row(peer.label, "FAILED", f"exit {peer.exit_code}", "", "", "", "")
            continue
        multiple = migrator_multiple(peer, runs, peer_result.runs)
        table.add_row(
            peer.label,
            f"{peer.mb_s:,.0f}",
            "",
            "",
            f"{peer.compression:.2f}x",
            f"{peer.peak_rss_bytes / MiB:,.0f}",
            f"{multiple:.2f}" if multiple is not None else "",
        )
    console.print(table)
    if disk_mb_s:
        console.print(
            f"destination disk, write + fsync + rename of 16 MiB files on {os.cpu_count()} threads:"
            f" {disk_mb_s:,.0f} MB/s (a local destination cannot go faster than this)"
        )
    console.print(
        "single thread MB/s: " + ", ".join(f"{name} {value:,.0f}" for name, value in prims.items())
    )
    console.print(
        f"machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, zstd level {machine['zstd_level']}, "
        f"{CHUNK_SIZE // MiB} MiB chunks; MB = 10**6 bytes"
    )
    console.print(f"note: {WARM_NOTE}")
    if peer_result is not None:
        console.print(f"note: {PEERS_NOTE}")
        for peer in peer_result.runs:
            factor = s3_vs_local(peer, runs)
            if factor is not None:
                console.print(
                    f"{peer.label} ran at {factor:.2f} of run({peer.kind})'s source MB/s"
                    " (local to local)"
                )
        for tool in peer_result.tools.values():
            console.print(tool.describe(), markup=False)
            for note in tool.notes:
                console.print(f"{tool.name}: {note}", markup=False)
        for message in peer_result.messages:
            console.print(message, markup=False, style="yellow")
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow")


def _run_record(kind: str, run: Run, ceiling: Ceiling) -> dict[str, object]:
    ratio = run.mb_s / ceiling.mb_s if run.ok else 0.0
    return {
        **asdict(run),
        "mb_s": run.mb_s if run.ok else 0.0,
        "ratio_to_ceiling": ratio,
        "target": TARGETS[kind],
        "product_target": PRODUCT_TARGETS[kind],
        "verdict": _verdict(ratio, kind) if run.ok else "FAILED",
        "compression": run.compression,
        "peak_rss_mib": run.peak_rss_bytes / MiB,
    }


def _peers_record(result: Peers, runs: dict[str, Run]) -> dict[str, object]:
    return {
        "tools": {name: asdict(tool) for name, tool in result.tools.items()},
        "runs": [
            {
                **asdict(peer),
                "label": peer.label,
                "mb_s": peer.mb_s,
                "compression": peer.compression,
                "peak_rss_mib": peer.peak_rss_bytes / MiB,
                "migrator_multiple": migrator_multiple(peer, runs, result.runs),
                "s3_vs_local": s3_vs_local(peer, runs),
            }
            for peer in result.runs
        ],
        "messages": result.messages,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="1GiB", help="data per type (records, objects)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --size 64MiB")
    parser.add_argument("--level", type=int, default=3, help="zstd level")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--workdir", type=Path, help="keep data here and reuse it (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--ceiling-only", action="store_true", help="skip the end-to-end runs")
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="skip restic, rclone, and migrator into S3 vs aws s3 cp",
    )
    args = parser.parse_args(argv)
    size = parse_size("64MiB" if args.quick else args.size)
    # Wide enough for the table when the output goes to a file or a CI log.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        prepare_data(workdir / "data", size, console)
        warm_read(workdir / "data")
        machine = machine_info(zstd_level=args.level, zstandard=zstandard.__version__)
        ceilings: dict[str, Ceiling] = {}
        prims: dict[str, float] = {}
        for kind in KINDS:
            chunks = list(itertools.islice(chunks_of(workdir / "data" / kind), CEILING_CHUNKS))
            ceilings[kind] = measure_ceiling(chunks, args.level)
            prims.update(primitives(kind, chunks, args.level))
            console.print(f"ceiling({kind}): {ceilings[kind].mb_s:,.0f} MB/s")
            del chunks  # the runs get the memory back

        runs: dict[str, Run] = {}
        disk_mb_s: float | None = None
        if not args.ceiling_only:
            disk_mb_s = measure_disk_write(
                workdir / "disk-probe", min(size, 1024 * MiB), os.cpu_count() or 1
            )
            for kind in KINDS:
                console.print(f"running migrator on {kind} ...")
                runs[kind] = run_migration(workdir, kind, args.level)
        peer_result: Peers | None = None
        if not args.ceiling_only and not args.no_peers:
            peer_result = run_peers(workdir, args.level, runs, console)

        print_report(console, machine, ceilings, prims, runs, disk_mb_s, peer_result)
        result = {
            "size_per_type_bytes": size,
            "chunk_size": CHUNK_SIZE,
            "machine": machine,
            "ceiling": {
                k: {**asdict(c), "compression": c.compression} for k, c in ceilings.items()
            },
            "single_thread_mb_s": prims,
            "destination_disk_write_mb_s": disk_mb_s,
            "runs": {k: _run_record(k, r, ceilings[k]) for k, r in runs.items()},
            "peers": _peers_record(peer_result, runs) if peer_result is not None else None,
            "notes": [WARM_NOTE] + ([PEERS_NOTE] if peer_result is not None else []),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"results written to {args.json}")
        failed = [kind for kind, run in runs.items() if not run.ok]
        for kind in failed:
            log_tail = (workdir / "runs" / runs[kind].log).read_text(errors="replace")
            console.print(f"run({kind}) failed; last lines of its log:", style="red")
            console.print("\n".join(log_tail.splitlines()[-20:]), markup=False)
        for peer in peer_result.runs if peer_result is not None else []:
            if not peer.ok:
                log_tail = (workdir / "runs" / "peers" / peer.log).read_text(errors="replace")
                why = f" ({peer.note})" if peer.note else ""
                console.print(f"{peer.label} failed{why}; last lines of its log:", style="red")
                console.print("\n".join(log_tail.splitlines()[-20:]), markup=False)
        # Missed targets and failed peer tools are reported, not fatal; a failed migrator run is.
        failed_s3 = [
            p
            for p in (peer_result.runs if peer_result else [])
            if p.tool == "migrator" and not p.ok
        ]
        return 1 if failed or failed_s3 else 0
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            console.print(f"workdir kept: {workdir}")


if __name__ == "__main__":
    sys.exit(main())

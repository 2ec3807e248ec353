"""The benchmark's data kinds: how each is generated (once per size, then reused) and its plan.

Records come in three shapes, since throughput on records is decided by the cost per record as
much as per byte: ~1 KB JSONL profiles (`records`, the name older results use), ~400-byte
compact profiles (`records-400`) and ~150-byte CSV rows of video metadata (`records-csv`).
Objects are incompressible fake videos.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console

from migrator.demo.synth import generate_metadata_file, generate_objects, generate_records_file
from migrator.sizes import MiB, format_size

SEED = 7
RECORD_FILES = 8
CHUNK_SIZE = 16 * MiB
SHARDS = 16
CSV_OWNERS = 10**6  # owner_user_id is drawn from this many user ids


@dataclass(frozen=True)
class Kind:
    name: str
    fmt: str  # jsonl | csv; "" for objects
    key: str  # the shard key field or column; "" for objects
    dataset: str  # the dataset's name in the plan
    file_pattern: str  # a records file's name, numbered
    description: str

    @property
    def is_records(self) -> bool:
        return bool(self.fmt)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("records", "jsonl", "user_id", "profiles", "profiles-{:04d}.jsonl", "JSONL ~1 KB"),
        Kind(
            "records-400", "jsonl", "user_id", "profiles", "profiles-{:04d}.jsonl", "JSONL ~400 B"
        ),
        Kind("records-csv", "csv", "video_id", "video_metadata", "videos-{:04d}.csv", "CSV ~150 B"),
        Kind("objects", "", "", "videos", "", "videos, incompressible"),
    )
}
ALL_KINDS = tuple(KINDS)
RECORD_KINDS = tuple(name for name, kind in KINDS.items() if kind.is_records)


def parse_kinds(text: str) -> tuple[str, ...]:
    """A comma-separated subset of ALL_KINDS, in ALL_KINDS's order; ValueError names the rest."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(ALL_KINDS))
    if unknown or not wanted:
        raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(ALL_KINDS)}")
    return tuple(kind for kind in ALL_KINDS if kind in wanted)


# --- generation ---------------------------------------------------------------------------


def _write_records_part(kind: str, path: Path, size: int, first_index: int) -> int:
    if kind == "records-csv":
        return generate_metadata_file(
            path, size, SEED, first_index=first_index, user_count=CSV_OWNERS
        )
    return generate_records_file(
        path, size, SEED, first_index=first_index, compact=kind == "records-400"
    )


def _marker(data_dir: Path, kind: str) -> Path:
    return data_dir / f"bench-data-{kind}.json"  # beside data/<kind>, so no tool reads it


def prepare_data(
    data_dir: Path, size: int, console: Console, kinds: Sequence[str] = ALL_KINDS
) -> None:
    """Generate `size` of each kind unless data of this size is already there (a marker per kind,
    written last, so an interrupted generation is redone)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "bench-data.json").unlink(missing_ok=True)  # the one marker of older versions
    for name in kinds:
        kind = KINDS[name]
        marker = _marker(data_dir, name)
        wanted = {"kind": name, "size": size, "seed": SEED, "record_files": RECORD_FILES}
        if marker.exists() and orjson.loads(marker.read_bytes()) == wanted:
            console.print(f"reusing generated {name} ({format_size(size)})")
            continue
        marker.unlink(missing_ok=True)
        shutil.rmtree(data_dir / name, ignore_errors=True)
        started = time.perf_counter()
        count = _generate(kind, data_dir / name, size)
        marker.write_bytes(orjson.dumps(wanted))
        what = "files" if not kind.is_records else "records"
        console.print(
            f"generated {count:,} {what} of {name} ({kind.description}, {format_size(size)})"
            f" in {time.perf_counter() - started:.1f} s"
        )


def _generate(kind: Kind, folder: Path, size: int) -> int:
    if not kind.is_records:
        return len(generate_objects(folder, size, SEED))
    part = size // RECORD_FILES
    sizes = [part] * (RECORD_FILES - 1) + [size - part * (RECORD_FILES - 1)]
    # Disjoint index ranges keep the keys unique while the files are written in parallel.
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = pool.map(
            _write_records_part,
            [kind.name] * RECORD_FILES,
            [folder / kind.file_pattern.format(i) for i in range(RECORD_FILES)],
            sizes,
            [i * 10**9 for i in range(RECORD_FILES)],
        )
        return sum(counts)


# --- reading ------------------------------------------------------------------------------


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in files(folder))


def warm_read(folder: Path) -> None:
    for path in files(folder):
        with path.open("rb") as f:
            while f.read(8 * MiB):
                pass


def chunks_of(folder: Path) -> Iterator[bytes]:
    """The files' bytes, concatenated and cut into CHUNK_SIZE pieces (the last may be short)."""
    buffer = bytearray()
    for path in files(folder):
        with path.open("rb") as f:
            while block := f.read(CHUNK_SIZE - len(buffer)):
                buffer += block
                if len(buffer) == CHUNK_SIZE:
                    yield bytes(buffer)
                    buffer.clear()
    if buffer:
        yield bytes(buffer)


# --- plans --------------------------------------------------------------------------------

LOCAL_DESTINATION = "{kind: local, path: dest, prefix: bench/}"
# A cloud destination needs a residency policy; moto listens on loopback.
LOOPBACK_RESIDENCY = "residency: {aws_partitions: [aws], allow_loopback: true}\n"


def plan_yaml(kind: str, level: int, destination: str = LOCAL_DESTINATION) -> str:
    """A one-dataset plan for a run folder two levels below the workdir (runs/<name>)."""
    spec = KINDS[kind]
    source = f"source: {{kind: local, path: ../../data/{kind}}}"
    if spec.is_records:
        dataset = (
            f"{{name: {spec.dataset}, kind: records, format: {spec.fmt}, {source},"
            f" key: {spec.key}, shards: {SHARDS}}}"
        )
    else:
        dataset = f"{{name: {spec.dataset}, kind: objects, {source}, shards: {SHARDS}}}"
    residency = "" if destination == LOCAL_DESTINATION else LOOPBACK_RESIDENCY
    return (
        "version: 1\n"
        "name: bench\n"
        "state_dir: state\n"
        f"compression_level: {level}\n"
        f"chunk_size: {CHUNK_SIZE // MiB}MiB\n"
        "memory_budget: 512MiB\n"
        "keys: {provider: local, kek_file: kek.key}\n"
        f"destination: {destination}\n"
        f"{residency}"
        "datasets:\n"
        f"  - {dataset}\n"
    )

"""Synthetic stand-ins for a plan's datasets, for a dry run where the real source is out of reach.

Each sample has the dataset's shape: its format, key field and CSV delimiter for records; file
objects for objects. A report that used one says so.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import orjson

from migrator.demo.synth import generate_objects, generate_records_file
from migrator.plan.model import DatasetKind, DatasetPlan

MiB = 1024 * 1024
_WORDS = ("alpha", "river", "north", "video", "camera", "summer", "city", "music", "travel")


def write_sample(ds: DatasetPlan, folder: Path, size: int, seed: int = 7) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if ds.kind is DatasetKind.OBJECTS:
        generate_objects(folder, size, seed, max_size=min(8 * MiB, max(size // 4, 64 * 1024)))
    elif ds.format == "jsonl" and ds.key == "user_id":
        generate_records_file(folder / "sample.jsonl", size, seed)
    elif ds.format == "jsonl":
        _write_jsonl(folder / "sample.jsonl", ds.key or "id", size, seed)
    else:
        _write_csv(folder / "sample.csv", ds.key or "id", ds.csv_delimiter, size, seed)


def _write_jsonl(path: Path, key: str, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        written, i = 0, 0
        while written < size:
            doc = {key: f"k{i:012d}", "text": " ".join(rng.choices(_WORDS, k=40)), "n": i}
            line = orjson.dumps(doc) + b"\n"
            out.write(line)
            written += len(line)
            i += 1


def _write_csv(path: Path, key: str, delimiter: str, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow([key, "title", "duration_s", "tags"])
        written, i = 0, 0
        while written < size:
            buf = io.StringIO()
            row = [f"v{i:012d}", " ".join(rng.choices(_WORDS, k=6)), i % 3600, "a,b"]
            csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(row)
            out.write(buf.getvalue())
            written += len(buf.getvalue())
            i += 1

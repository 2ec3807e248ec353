"""A plan with landings, its sources changing between syncs, and what each landed copy must then
equal: what the landing tests share, whatever the targets (folders, moto, Azurite, PostgreSQL).

Each sync inserts, rewrites and deletes records (a key held by two files included, so the
archive holds duplicates of a key) and adds, rewrites, renames and removes objects.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from pathlib import Path

import orjson

import migrator
from migrator.plan.model import Plan, load_plan
from tests.planfiles import split_records, write_plan

CSV_HEADER = b"video_id,title,duration_s"


def profile(i: int, rng: random.Random, version: int = 0) -> bytes:
    doc = {
        "user_id": f"u{i:06d}" if i % 5 else i,  # strings and integers both occur
        "name": rng.choice(["Zoë", "李雷", "Ana", 'Bob "the" 🎬']),
        "v": version,
        "bio": " ".join(rng.choice(["video", "music", "travel", "cats"]) for _ in range(8)),
    }
    return orjson.dumps(doc)


def metadata_row(i: int, version: int = 0) -> bytes:
    title = [f"clip {i}", f'say "hi", {i}', f"two\nlines {i}"][i % 3]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([f"v{i:06d}", f"{title} r{version}", i % 600])
    return buf.getvalue().encode().removesuffix(b"\n")


class ChangingSources:
    """Three datasets' sources under root/data, changed in place by `change(step)`."""

    def __init__(self, root: Path, seed: int = 7) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.profiles: dict[str, list[bytes]] = {}  # file -> records
        self.metadata: dict[str, list[bytes]] = {}
        self.videos: dict[str, bytes] = {}
        self.next_id = 0

    def _ids(self, n: int) -> list[int]:
        out = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return out

    def create(self, profiles: int = 120, rows: int = 60, objects: int = 9) -> None:
        ids = self._ids(profiles)
        for f in range(3):
            self.profiles[f"part-{f}.jsonl"] = [profile(i, self.rng) for i in ids[f::3]]
        # A key held by two files: the archive keeps both records, a table serves one.
        self.profiles["part-0.jsonl"].append(profile(ids[1], self.rng, version=9))
        rids = self._ids(rows)
        for f in range(2):
            self.metadata[f"meta-{f}.csv"] = [metadata_row(i) for i in rids[f::2]]
        for i in range(objects):
            size = [0, 1, 1000, 70_000, 150_000][i % 5]
            name = f"{i % 3:02x}/video {i}é.mp4" if i % 4 == 0 else f"{i % 3:02x}/v{i}.mp4"
            self.videos[name] = self.rng.randbytes(size)
        self.write()

    def change(self, step: int) -> None:
        """Inserts, rewrites and deletes, different at each step."""
        rng = self.rng
        files = sorted(self.profiles)
        # insert: a new file every other step, else appended to one
        new = [profile(i, rng, step) for i in self._ids(7)]
        if step % 2:
            self.profiles[f"part-s{step}.jsonl"] = new
        else:
            self.profiles[files[step % len(files)]] += new
        # rewrite two records and delete two, in another file
        target = self.profiles[files[(step + 1) % len(files)]]
        for _ in range(2):
            if target:
                j = rng.randrange(len(target))
                doc = orjson.loads(target[j])
                doc["v"] = step
                target[j] = orjson.dumps(doc)
        for _ in range(2):
            if target:
                del target[rng.randrange(len(target))]
        if step == 3:  # a whole file goes
            del self.profiles[files[-1]]
        meta_files = sorted(self.metadata)
        rows = self.metadata[meta_files[step % len(meta_files)]]
        rows += [metadata_row(i, step) for i in self._ids(3)]
        if rows:
            rows[0] = metadata_row(int(rows[0][1:7]), step)
            del rows[-1]
        # objects: add, rewrite, rename, remove
        names = sorted(self.videos)
        self.videos[f"new/s{step} clip.mp4"] = rng.randbytes(rng.choice([0, 500, 90_000]))
        if names:
            self.videos[names[0]] = rng.randbytes(len(self.videos[names[0]]) + 3)
        if len(names) > 2:
            self.videos[names[1] + ".renamed"] = self.videos.pop(names[1])
            del self.videos[names[2]]
        self.write()

    def write(self) -> None:
        for folder in ("profiles", "metadata", "videos"):
            base = self.root / "data" / folder
            if base.exists():
                for p in sorted(base.rglob("*"), reverse=True):
                    if p.is_file():
                        p.unlink()
            base.mkdir(parents=True, exist_ok=True)
        for name, records in self.profiles.items():
            (self.root / "data/profiles" / name).write_bytes(b"".join(r + b"\n" for r in records))
        for name, rows in self.metadata.items():
            body = CSV_HEADER + b"\n" + b"".join(r + b"\n" for r in rows)
            (self.root / "data/metadata" / name).write_bytes(body)
        for name, data in self.videos.items():
            path = self.root / "data/videos" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def profile_records(self) -> Counter[bytes]:
        return Counter(r for records in self.profiles.values() for r in records)

    def metadata_records(self) -> Counter[bytes]:
        return Counter(r for rows in self.metadata.values() for r in rows)


def datasets_yaml(profiles: str, metadata: str, videos: str) -> str:
    """The three datasets, each with the landing given as a YAML flow mapping."""
    return f"""\
  - {{name: profiles, kind: records, format: jsonl, source: {{kind: local, path: data/profiles}},
     key: user_id, shards: 4, landing: {profiles}}}
  - {{name: metadata, kind: records, format: csv, source: {{kind: local, path: data/metadata}},
     key: video_id, shards: 3, landing: {metadata}}}
  - {{name: videos, kind: objects, source: {{kind: local, path: data/videos}}, shards: 3,
     part_size: 64KiB, landing: {videos}}}
"""


class LandingSite:
    """A plan over ChangingSources with the given landings; `sync()` runs it, `land()` lands."""

    def __init__(self, root: Path, datasets: str, **plan_options: str) -> None:
        self.root = root
        self.sources = ChangingSources(root)
        self.sources.create()
        self.plan_file = write_plan(root, datasets=datasets, **plan_options)
        self.plan: Plan = load_plan(self.plan_file)

    def sync(self) -> None:
        migrator.run(self.plan)

    def land(self, *, worker: bool = False) -> list[migrator.LandReport]:
        return migrator.land(self.plan, worker=worker)

    def check(self) -> list[migrator.LandedShard]:
        return migrator.check_landing(self.plan)


def shard_file_records(files: dict[str, bytes], *, csv_header: bytes | None) -> Counter[bytes]:
    """The records of landed per-shard files (a CSV one starts with its header)."""
    seen: Counter[bytes] = Counter()
    for name, data in files.items():
        records = split_records(data, csv_quotes=csv_header is not None)
        if csv_header is not None:
            assert records[:1] == [csv_header], f"{name} does not start with the header"
            records = records[1:]
        seen.update(records)
    return seen


def assert_all_match(checked: list[migrator.LandedShard]) -> None:
    bad = [f"shard {s.shard} {s.target}: {s.why()}" for s in checked if not s.match]
    assert checked and not bad, bad

"""The crash matrix: `kill -9` at each boundary of a chunk's life, resume, and end with what an
uninterrupted run ends with.

Each case runs one command (a bulk `run`, a sync `run`, or `compact`) in a child of the fork
server in crash_harness.py, armed to SIGKILL itself at the N-th hit of one crash point (read,
encoded, uploading, uploaded but not committed, committed, manifest stored, shard complete,
generation record stored, generation committed, multipart begin / part / complete, compaction
writes and sweep deletes), on a local folder or on S3 (moto) where uploads differ. Then the same
command runs again, unarmed, and the site must be whole: `verify` (a full read) passes, `restore`
gives the source back exactly, the rerun skipped exactly the chunks committed before the kill,
the state store counts exactly the chunks the stored manifests list, no chunk or manifest lies
outside the chains the generation records name, and no multipart upload or spool file is left.

Beside the matrix: a sync whose source loses a video between the kill and the rerun, and kills
at random hits (a seeded RNG) of every point at once, for boundaries nobody listed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from migrator.demo.motoserver import MotoServer, s3_client
from migrator.keys.keyring import load_keyring
from migrator.keys.local import LocalKeyProvider
from migrator.read.chain import head_chain
from migrator.repository.generations import load_record, record_generations
from migrator.stores.base import ObjectStore
from migrator.stores.local import LocalStore
from migrator.stores.s3 import S3Store
from tests.integration.crash_harness import SMALL_PART_FLOOR
from tests.planfiles import (
    AWS_TEST_ENV,
    METADATA,
    PROFILES,
    VIDEOS,
    files_below,
    restored_records,
    run_cli,
    s3_destination,
    write_plan,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HARNESS = Path(__file__).with_name("crash_harness.py")
LOCAL_DATASETS = ("profiles", "metadata", "videos")
# On S3 what differs is how objects go up: the videos alone show both ways, small parts in one
# put and full 64 KiB parts (incompressible) in multipart uploads of 24 KiB parts.
S3_DATASETS = ("videos",)
PLAN_DATASETS = {"profiles": PROFILES, "metadata": METADATA, "videos": VIDEOS}
CSV_HEADER = b"video_id,title,duration_s"
S3_SIZES = "multipart_threshold: 40KiB, upload_part_size: 24KiB"
COMMAND_SECONDS = 60.0
GENERATION_FOLDER = re.compile(r"^[^/]+/g\d{6,}/")  # chunks and manifests of one generation


# --- the source, in three versions -----------------------------------------------------------


@dataclass
class Version:
    """One state of the source platform's data, and the folder that holds it."""

    root: Path
    profiles: dict[str, bytes]
    rows: dict[str, bytes]
    videos: dict[str, bytes]

    def check_restored(self, out: Path, datasets: tuple[str, ...]) -> None:
        if "profiles" in datasets:
            assert restored_records(out / "profiles") == Counter(self.profiles.values())
        if "metadata" in datasets:
            rows = restored_records(out / "metadata", csv_header=CSV_HEADER)
            assert rows == Counter(self.rows.values())
        if "videos" in datasets:
            videos = out / "videos"
            assert (files_below(videos) if videos.exists() else {}) == self.videos

    def without_video(self, name: str, root: Path) -> Version:
        """This version less one video, in a new folder; every other file the same (links)."""
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root)
            if path.is_dir():
                (root / rel).mkdir(parents=True, exist_ok=True)
            elif rel != Path("videos", name):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(path, root / rel)
        videos = {k: v for k, v in self.videos.items() if k != name}
        return Version(root, self.profiles, self.rows, videos)


class LiveData:
    """The source as the tests change it between runs: inserts, updates, deletes of records;
    videos added, rewritten and removed. Unchanged videos are hard links to their previous
    version, so their size and mtime (the local source's version) stay the same."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.serial = 0
        self.profiles: dict[str, bytes] = {}
        self.rows: dict[str, bytes] = {}
        self.videos: dict[str, bytes] = {}
        self.changed: set[str] = set()
        self.added = ""  # the video added last
        self.last: Path | None = None

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def profile(self, uid: str) -> bytes:
        words = ["video", "music", "cats", "李雷", "🎬", "travel"]
        bio = " ".join(self.rng.choice(words) + str(self.rng.randrange(99)) for _ in range(16))
        return orjson.dumps({"user_id": uid, "bio": bio, "v": self._next()})

    def row(self, vid: str) -> bytes:
        n = self._next()
        title = [f"clip {vid}", f'say "hi", {vid}', f"two\nlines {vid}"][n % 3]
        return f'{vid},"{title.replace(chr(34), chr(34) * 2)}",{n % 600}'.encode()

    def video(self, size: int) -> None:
        n = self._next()
        name = f"{n % 3:02x}/clip {n}é.mp4" if n % 4 == 0 else f"{n % 3:02x}/c{n}.mp4"
        self.videos[name] = self.rng.randbytes(size)
        self.changed.add(name)
        self.added = name

    def seed(self) -> None:
        for i in range(1600):
            self.profiles[f"u{i:05d}"] = self.profile(f"u{i:05d}")
        for i in range(500):
            self.rows[f"v{i:05d}"] = self.row(f"v{i:05d}")
        for size in (0, 1, 100, 5_000, 65_536, 70_000, 150_000):
            self.video(size)

    def mutate(self) -> None:
        for table, make, prefix in ((self.profiles, self.profile, "u"), (self.rows, self.row, "v")):
            keys = sorted(table)
            for k in self.rng.sample(keys, len(keys) // 12):
                table[k] = make(k)
            for k in self.rng.sample(keys, len(keys) // 20):
                table.pop(k, None)
            for _ in range(len(keys) // 20):
                k = f"{prefix}{90_000 + self._next():05d}"
                table[k] = make(k)
        names = sorted(self.videos)
        del self.videos[names[1]]
        rewrite = names[-2]
        self.videos[rewrite] = self.rng.randbytes(len(self.videos[rewrite]) + 7)
        self.changed.add(rewrite)
        self.video(90_000)

    def write(self, root: Path) -> Version:
        pdir, mdir, vdir = root / "profiles", root / "metadata", root / "videos"
        lines: list[list[bytes]] = [[], [], []]
        for i, uid in enumerate(sorted(self.profiles)):
            lines[i % 3].append(self.profiles[uid])
        pdir.mkdir(parents=True)
        for n, part in enumerate(lines):
            (pdir / f"part-{n}.jsonl").write_bytes(b"".join(r + b"\n" for r in part))
        mdir.mkdir()
        rows: list[list[bytes]] = [[], []]
        for i, vid in enumerate(sorted(self.rows)):
            rows[i % 2].append(self.rows[vid])
        for n, part in enumerate(rows):
            body = b"".join(r + b"\n" for r in part)
            (mdir / f"meta-{n}.csv").write_bytes(CSV_HEADER + b"\n" + body)
        for name, data in self.videos.items():
            path = vdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.last is not None and name not in self.changed:
                os.link(self.last / "videos" / name, path)
            else:
                path.write_bytes(data)
        self.changed.clear()
        self.last = root
        return Version(root, dict(self.profiles), dict(self.rows), dict(self.videos))


@dataclass
class Sources:
    v1: Version  # what the bulk copies
    v2: Version  # a sync's worth of changes later
    v3: Version  # another: after it every shard has a chain to compact
    v2_less: Version  # v2 without the video v2 added
    added: str  # that video


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    base = tmp_path_factory.mktemp("sources")
    live = LiveData()
    live.seed()
    v1 = live.write(base / "v1")
    live.mutate()
    v2 = live.write(base / "v2")
    added = live.added
    live.mutate()
    v3 = live.write(base / "v3")
    return Sources(v1, v2, v3, v2.without_video(added, base / "v2-less"), added)


# --- the fork server -------------------------------------------------------------------------


@dataclass
class Outcome:
    returncode: int | None
    output: str  # stdout and stderr
    marker: list[str]  # what the harness wrote just before the kill

    def killed_at(self, point: str = "") -> str:
        """The marker line of the kill, which must have come from `point` (any, if empty), and
        the process must have died of SIGKILL."""
        assert self.returncode == -9, f"rc {self.returncode}: {self.output[-2000:]}"
        assert len(self.marker) == 1 and self.marker[0].startswith(f"KILL {point}"), self.marker
        return self.marker[0]

    def json(self) -> Any:
        return json.loads(self.output[self.output.index("{") :])


class Migrator:
    """`python -m migrator ARGS` run by the fork server, optionally armed with a crash point."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.count = 0
        env = {**os.environ, **AWS_TEST_ENV, "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "160"}
        env.pop("MIGRATOR_WORKER_ID", None)  # named workers wait for a dead one's lease to lapse
        env.pop("MIGRATOR_STATE_URL", None)
        self.stderr = (logs / "harness.err").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def __call__(self, site: Site, *argv: str, crash: dict[str, Any] | None = None) -> Outcome:
        self.count += 1
        out, marker = self.logs / f"{self.count:04d}.out", self.logs / f"{self.count:04d}.marker"
        request = {
            "argv": list(argv),
            "cwd": str(site.root),
            "out": str(out),
            "marker": str(marker),
            "crash": crash,
            "small_parts": site.s3 is not None,
            "timeout": COMMAND_SECONDS,
        }
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the fork server died: {(self.logs / 'harness.err').read_text()[-2000:]}"
        answer = json.loads(line)
        assert answer["returncode"] is not None, f"{argv} ran over {COMMAND_SECONDS} s"
        return Outcome(
            answer["returncode"],
            out.read_text(errors="replace") if out.exists() else "",
            marker.read_text().splitlines() if marker.exists() else [],
        )

    def hits(self, site: Site, *argv: str) -> int:
        """How many times any crash point is hit in one unarmed run of argv."""
        done = self(site, *argv, crash={"count": True})
        assert done.returncode == 0, done.output[-2000:]
        tally = json.loads((self.logs / f"{self.count:04d}.marker").read_text())
        return sum(tally.values())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.stderr.close()


@pytest.fixture(scope="module")
def migrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrator]:
    server = Migrator(tmp_path_factory.mktemp("commands"))
    try:
        yield server
    finally:
        server.close()


# --- sites: a plan, its state and its destination --------------------------------------------


@dataclass
class S3Place:
    endpoint: str
    bucket: str


@dataclass
class Site:
    root: Path
    s3: S3Place | None = None
    checks: int = 0

    @property
    def datasets(self) -> tuple[str, ...]:
        return LOCAL_DATASETS if self.s3 is None else S3_DATASETS

    def use(self, version: Version) -> None:
        data = self.root / "data"
        if data.is_symlink():
            data.unlink()
        data.symlink_to(version.root, target_is_directory=True)

    def write_plan(self) -> None:
        destination = (
            "{kind: local, path: dest, prefix: t/}"
            if self.s3 is None
            else s3_destination(self.s3.endpoint, self.s3.bucket, sizes=S3_SIZES)
        )
        write_plan(
            self.root,
            datasets="".join(PLAN_DATASETS[name] for name in self.datasets),
            destination=destination,
            extra="workers: 2\nupload_concurrency: 2",
        )

    def store(self) -> ObjectStore:
        if self.s3 is None:
            return LocalStore(self.root / "dest" / "t")
        return S3Store(
            self.s3.bucket,
            "t/",
            region="us-east-1",
            endpoint_url=self.s3.endpoint,
            allow_small_parts=True,
        )

    def db(self) -> sqlite3.Connection:
        path = self.root / "state" / "state.sqlite"
        return sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=5)


def new_bucket(moto: MotoServer) -> S3Place:
    bucket = f"crash-{uuid.uuid4().hex[:20]}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    return S3Place(moto.endpoint_url, bucket)


def new_site(root: Path, version: Version, s3: S3Place | None = None) -> Site:
    root.mkdir(parents=True)
    site = Site(root, s3)
    site.use(version)
    site.write_plan()
    return site


def copy_site(template: Site, root: Path, moto: MotoServer | None = None) -> Site:
    """The template's plan, KEK, state and destination, as a new site (a new bucket on S3)."""
    shutil.copytree(template.root, root, symlinks=True)
    site = Site(root, None)
    if template.s3 is not None:
        assert moto is not None
        site.s3 = new_bucket(moto)
        client = s3_client(moto.endpoint_url)
        # Read and put again: a server-side copy of a multipart object gets a checksum moto
        # then refuses on read; the bytes and metadata are what matter here.
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=template.s3.bucket):
            for item in page.get("Contents", []):
                got = client.get_object(Bucket=template.s3.bucket, Key=item["Key"])
                client.put_object(
                    Bucket=site.s3.bucket,
                    Key=item["Key"],
                    Body=got["Body"].read(),
                    Metadata=got["Metadata"],
                )
        site.write_plan()
    return site


@pytest.fixture(scope="module")
def small_parts_moto(moto_server: MotoServer) -> Iterator[MotoServer]:
    """The session's moto, taking multipart parts of 24 KiB for this module's tests."""
    import moto.s3.models

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", SMALL_PART_FLOOR)
        yield moto_server


class Templates:
    """Sites made once a module and copied per test: the bulk done (v1), and the bulk and two
    syncs done (v3)."""

    def __init__(self, root: Path, sources: Sources, migrator: Migrator) -> None:
        self.root = root
        self.sources = sources
        self.migrator = migrator
        self.made: dict[tuple[str, str], Site] = {}

    def get(self, stage: str, moto: MotoServer | None) -> Site:
        dest = "local" if moto is None else "s3"
        if (stage, dest) not in self.made:
            s3 = None if moto is None else new_bucket(moto)
            site = new_site(self.root / f"{stage}-{dest}", self.sources.v1, s3)
            finish(self.migrator, site, "run")
            if stage == "synced":
                for version in (self.sources.v2, self.sources.v3):
                    site.use(version)
                    finish(self.migrator, site, "run")
            self.made[stage, dest] = site
        return self.made[stage, dest]


@pytest.fixture(scope="module")
def templates(
    tmp_path_factory: pytest.TempPathFactory, sources: Sources, migrator: Migrator
) -> Templates:
    return Templates(tmp_path_factory.mktemp("templates"), sources, migrator)


# --- running, resuming, checking ------------------------------------------------------------


def finish(migrator: Migrator, site: Site, command: str) -> Outcome:
    done = migrator(site, command, "plan.yaml")
    assert done.returncode == 0, done.output[-3000:]
    return done


def in_open_generations(site: Site) -> int:
    """Chunks committed to generations not yet committed: what a resumed run skips."""
    with closing(site.db()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM generations g"
            " WHERE g.dataset=c.dataset AND g.generation=c.generation"
            " AND g.status='committed')"
        ).fetchone()
    return int(row[0])


def check_rerun_skipped(done: Outcome, committed_before: int) -> None:
    """A resumed run skips exactly the chunks committed before the kill, and redoes the rest."""
    match = re.search(r"(\d+) chunks written, (\d+) already done", done.output)
    assert match, done.output[-2000:]
    assert int(match[2]) == committed_before, "the rerun did not skip exactly what was committed"


def resume(migrator: Migrator, site: Site, command: str) -> None:
    """The killed command again, unarmed."""
    before = in_open_generations(site) if command == "run" else 0
    done = finish(migrator, site, command)
    if command == "run":
        check_rerun_skipped(done, before)


class LeftBehind(AssertionError):
    """Something a crash left that the resumed command never cleans up."""


def check_whole(migrator: Migrator, site: Site, expected: Version) -> None:
    """verify, restore and status agree with the source and with each other; the state store
    counts exactly what the stored manifests list; nothing is left behind: no multipart upload,
    no spool of a committed generation (routed plaintext)."""
    listed = check_destination(site)
    check_state(site, listed)

    checked = migrator(site, "verify", "plan.yaml", "--json")
    assert checked.returncode == 0, checked.output[-3000:]
    report = checked.json()
    assert report["ok"] and report["problems"] == []
    assert report["chunks_checked"] == report["chunks_listed"] == listed.latest_chunks

    site.checks += 1
    out = site.root / f"restored-{site.checks}"
    for name in site.datasets:
        done = migrator(site, "restore", "plan.yaml", "--dataset", name, "--out", str(out / name))
        assert done.returncode == 0, done.output[-3000:]
    expected.check_restored(out, site.datasets)

    status = migrator(site, "status", "plan.yaml", "--json")
    assert status.returncode == 0, status.output[-3000:]
    for ds in status.json()["datasets"]:
        assert ds["generations"][-1]["status"] == "committed", ds["generations"]
        assert ds["shards_complete"] == ds["shards"]
        assert ds["chunks"] == listed.chunks_of(ds["name"], ds["generation"])

    # Last, so that a test marked with one of these known leaks still checks all of the above.
    if site.s3 is not None:
        client = s3_client(site.s3.endpoint)
        uploads = client.list_multipart_uploads(Bucket=site.s3.bucket).get("Uploads", [])
        if uploads:
            raise LeftBehind(f"unfinished multipart uploads: {[u['Key'] for u in uploads]}")
    spooled = sorted(p for p in (site.root / "state" / "spool").rglob("*") if p.is_file())
    if spooled:
        names = [p.relative_to(site.root).as_posix() for p in spooled]
        raise LeftBehind(f"spool files left in state_dir after their generation: {names}")
    if site.s3 is None:  # a local folder: no temporary of a killed write, no sidecar alone
        dest = site.root / "dest" / "t"
        files = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
        meta = {f for f in files if f.startswith(".meta/")}
        described = {f[len(".meta/") : -len(".json")] for f in meta if f.endswith(".json")}
        objects = files - meta
        alone = sorted((objects - described) | {f for f in meta if not f.endswith(".json")})
        orphans = sorted(f".meta/{f}.json" for f in described - objects)
        if alone or orphans:
            raise LeftBehind(f"files of killed writes in the destination: {alone + orphans}")


@dataclass
class Listed:
    """What the generation records at the destination name: chain manifests and their chunks."""

    manifests: dict[tuple[str, int, int], set[str]] = field(default_factory=dict)
    latest_chunks: int = 0  # in the chains of the newest records: what verify reads

    def chunks_of(self, dataset: str, generation: int) -> int:
        return sum(
            len(keys)
            for (ds, gen, _), keys in self.manifests.items()
            if (ds, gen) == (dataset, generation)
        )


def check_destination(site: Site) -> Listed:
    """Every generation record opens, with whole chains, and every chunk or manifest stored is
    in one of them: nothing half-written, superseded or orphaned stays behind."""
    store = site.store()
    provider = LocalKeyProvider(site.root / "kek.key")
    listed = Listed()
    for ds in site.datasets:
        keyring = load_keyring(store, provider, "test", ds)
        gens = record_generations(store, ds)
        assert gens, f"{ds}: no generation record"
        named: set[str] = set()
        for g in gens:
            record = load_record(store, "test", ds, g, keyring)[0]
            for head in record.shards:
                for link in head_chain(store, "test", ds, head, keyring):
                    m = link.manifest
                    keys = {c.object_key for c in m.chunks}
                    listed.manifests[ds, m.generation, m.shard] = keys
                    named |= keys | {link.object_key}
                    if g == gens[-1]:
                        listed.latest_chunks += len(keys)
        stored = {o.key for o in store.list(f"{ds}/")}
        stray = sorted(k for k in stored if GENERATION_FOLDER.match(k) and k not in named)
        assert stray == [], f"{ds}: stored but in no manifest of a generation record: {stray}"
    return listed


def check_state(site: Site, listed: Listed) -> None:
    """The state store counts exactly the chunks the stored manifests list, shard by shard."""
    with closing(site.db()) as conn:
        gens = conn.execute("SELECT dataset, generation, status FROM generations").fetchall()
        counted: dict[tuple[str, int, int], set[str]] = defaultdict(set)
        for ds, gen, shard, okey in conn.execute(
            "SELECT dataset, generation, shard, object_key FROM chunks"
        ):
            counted[ds, gen, shard].add(okey)
        shard_rows = conn.execute(
            "SELECT dataset, generation, shard, status, manifest_key, chunks_n FROM shards"
        ).fetchall()
        journal = conn.execute("SELECT object_key FROM uploads").fetchall()
    assert [g for g in gens if g[2] != "committed"] == []
    for where, keys in counted.items():
        assert where in listed.manifests, f"{where}: chunks counted for a shard with no manifest"
        assert keys == listed.manifests[where], f"{where}: counted chunks differ from the manifest"
    for ds, gen, shard, status, mkey, n in shard_rows:
        assert status == "complete", (ds, gen, shard, status)
        if mkey is None:
            assert not counted.get((ds, gen, shard)), f"{(ds, gen, shard)}: chunks, no manifest"
        else:
            assert (ds, gen, shard) in listed.manifests, f"{mkey} is in no generation record"
            assert n == len(listed.manifests[ds, gen, shard]), f"{mkey}: chunk total differs"
    assert journal == [], "multipart uploads still journaled"


# --- the matrix ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str  # bulk | sync | compact
    dest: str  # local | s3
    point: str  # as crash_harness.py names it
    hit: int  # the hit of the point (counted for `dataset` alone) that kills
    dataset: str

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.dest}-{self.point}@{self.dataset}#{self.hit}"


def cases(kind: str, dest: str, points: list[tuple[Any, ...]]) -> list[Any]:
    out = []
    for point in points:
        case = Case(kind, dest, *point)
        out.append(pytest.param(case, id=case.id))
    return out


MATRIX = [
    *cases(
        "bulk",
        "local",
        [
            ("key-put:after", 1, "profiles"),  # the wrapped data key stored, nothing else
            ("route-checkpoint:after", 1, "profiles"),  # routed into spools, nothing encoded
            ("chunk-encode:before", 4, "profiles"),  # read
            ("chunk-encode:after", 4, "profiles"),  # encoded
            ("chunk-put:before", 4, "profiles"),  # uploading
            ("chunk-put:after", 4, "profiles"),  # uploaded, not committed
            ("chunk-put:after", 6, "videos"),
            ("commit-chunks:before", 1, "profiles"),
            ("commit-chunks:after", 1, "videos"),  # committed, no manifest
            ("manifest-put:before", 2, "profiles"),
            ("manifest-put:after", 2, "metadata"),  # manifest stored, shard not complete
            ("complete-shard:after", 2, "videos"),
            ("generation-put:before", 1, "metadata"),  # every shard complete, no record
            ("generation-put:after", 1, "profiles"),  # record stored, not committed
            ("commit-generation:after", 1, "profiles"),
            ("commit-generation:after", 1, "videos"),
        ],
    ),
    *cases(
        "bulk",
        "s3",
        [
            ("chunk-put:after", 2, "videos"),  # a small part, stored in one put
            ("upload-begin:after", 2, "videos"),  # begun, not journaled
            ("journal-upload:after", 2, "videos"),  # journaled, no part sent
            ("upload-part:after", 5, "videos"),  # between parts
            ("upload-complete:before", 2, "videos"),  # every part sent
            ("upload-complete:after", 2, "videos"),  # completed, still journaled
        ],
    ),
    *cases(
        "sync",
        "local",
        [
            ("chunk-put:after", 2, "profiles"),
            ("commit-chunks:after", 1, "metadata"),
            ("chunk-put:before", 2, "videos"),
            ("manifest-put:after", 1, "profiles"),
            ("complete-shard:after", 1, "videos"),
            ("generation-put:after", 1, "profiles"),
            ("commit-generation:after", 1, "metadata"),
            ("commit-generation:after", 1, "videos"),
        ],
    ),
    *cases(
        "sync",
        "s3",
        [
            ("upload-part:after", 2, "videos"),
            ("upload-complete:after", 1, "videos"),
        ],
    ),
    *cases(
        "compact",
        "local",
        [
            ("chunk-put:after", 3, "profiles"),
            ("commit-chunks:after", 1, "videos"),
            ("manifest-put:after", 1, "metadata"),
            ("generation-put:before", 1, "profiles"),
            ("generation-put:after", 1, "videos"),  # the switch: stored, not committed
            ("commit-generation:after", 1, "profiles"),
            ("commit-generation:after", 1, "videos"),  # switched, nothing swept
            ("manifest-delete:after", 1, "profiles"),  # sweeping: an old manifest gone
            ("chunk-delete:after", 3, "videos"),
            ("forget-generation:before", 2, "profiles"),  # a shard swept, not forgotten
            ("generation-delete:before", 1, "metadata"),  # old records still there
        ],
    ),
    *cases(
        "compact",
        "s3",
        [
            ("upload-begin:after", 1, "videos"),
            ("upload-part:after", 2, "videos"),
        ],
    ),
]


def prepared(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Site, Version]:
    """The site the case's command starts from, and the source it must end up equal to."""
    sources: Sources = request.getfixturevalue("sources")
    moto = request.getfixturevalue("small_parts_moto") if case.dest == "s3" else None
    if case.kind == "bulk":
        s3 = new_bucket(moto) if moto is not None else None
        return new_site(tmp_path / "site", sources.v1, s3), sources.v1
    templates: Templates = request.getfixturevalue("templates")
    stage = "bulk" if case.kind == "sync" else "synced"
    site = copy_site(templates.get(stage, moto), tmp_path / "site", moto)
    version = sources.v2 if case.kind == "sync" else sources.v3
    site.use(version)
    return site, version


@pytest.mark.parametrize("case", MATRIX)
def test_killed_at_a_boundary_then_resumed(
    case: Case, tmp_path: Path, migrator: Migrator, request: pytest.FixtureRequest
) -> None:
    site, expected = prepared(case, tmp_path, request)
    command = "compact" if case.kind == "compact" else "run"
    crash = {"point": case.point, "hit": case.hit, "dataset": case.dataset}
    migrator(site, command, "plan.yaml", crash=crash).killed_at(case.point)
    resume(migrator, site, command)
    if command == "compact":
        # The next sync finds nothing changed: the new bases carried the inventories over.
        again = finish(migrator, site, "run")
        check_rerun_skipped(again, 0)
        assert "0 chunks written" in again.output, again.output[-2000:]
    check_whole(migrator, site, expected)


def test_source_changed_between_the_kill_and_the_rerun(
    tmp_path: Path, migrator: Migrator, sources: Sources, templates: Templates
) -> None:
    """A sync killed after committing a new video's parts; the video is deleted before the
    rerun, which is killed again while deleting those parts; the last run leaves none."""
    site = copy_site(templates.get("bulk", None), tmp_path / "site")
    site.use(sources.v2)
    # Every videos chunk is committed before the first videos manifest is stored.
    crash = {"point": "manifest-put:before", "hit": 1, "dataset": "videos"}
    migrator(site, "run", "plan.yaml", crash=crash).killed_at("manifest-put:before")
    site.use(sources.v2_less)
    crash = {"point": "chunk-delete:after", "hit": 1, "dataset": "videos"}
    migrator(site, "run", "plan.yaml", crash=crash).killed_at("chunk-delete:after")
    finish(migrator, site, "run")
    check_whole(migrator, site, sources.v2_less)


SEEDS = (11, 12, 13)


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_at_random_hits_of_every_point(
    seed: int, tmp_path: Path, migrator: Migrator, sources: Sources
) -> None:
    """A bulk, a sync and a compaction, each killed at a hit drawn from every crash point at
    once (boundaries nobody listed included), then again while resuming (if the resumed
    command gets that far), then resumed to the end."""
    rng = random.Random(seed)
    site = new_site(tmp_path / "site", sources.v1)
    kills: list[str] = []
    for step, (command, version) in enumerate(
        [("run", sources.v1), ("run", sources.v2), ("compact", sources.v2)]
    ):
        site.use(version)
        total = migrator.hits(copy_site(site, tmp_path / f"count-{step}"), command, "plan.yaml")
        kill_at = rng.randint(1, total * 9 // 10)
        kills.append(migrator(site, command, "plan.yaml", crash={"random": kill_at}).killed_at())
        again = migrator(site, command, "plan.yaml", crash={"random": rng.randint(1, total)})
        if again.returncode != 0:  # it may finish before its hit
            kills.append(again.killed_at())
        if step == 0 and seed == SEEDS[0]:  # once as a user types it, in a new interpreter
            before = in_open_generations(site)
            done = run_cli("run", "plan.yaml", cwd=site.root, timeout=COMMAND_SECONDS)
            assert done.returncode == 0, done.stderr[-3000:]
            check_rerun_skipped(Outcome(0, done.stdout, []), before)
        else:
            resume(migrator, site, command)
        if step != 1:  # the bulk, then the end (the sync is checked through the compaction)
            check_whole(migrator, site, version)
    print("\n".join(kills))

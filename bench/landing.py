"""Landing throughput: `migrator land` of the objects dataset into S3 on moto, beside
`aws s3 cp --recursive` of the same plaintext files, both under SSE-KMS.

    python bench/landing.py [--size 64MiB] [--level 3] [--rounds 2] [--workdir DIR]
                            [--json out.json]

The objects kind (datasets.py) is migrated once, untimed, into a local archive (runs/land-objects,
the plan bench.py's objects run uses plus a `landing` bucket). Then, in one moto server on
127.0.0.1 with one KMS key, each round times (a) `migrator land plan.yaml`, as a user runs it
(landing, then the landed-digest check), into a fresh bucket, and (b) `aws s3 cp --recursive
data/objects` with `--sse aws:kms --sse-kms-key-id ARN` into another; rounds alternate land, aws,
land, aws, and the best of each counts. Each bucket must end up with the source's objects and
bytes, under the key; it is emptied after its round so moto holds one round's bytes at a time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import orjson
import peers
import yaml
from datasets import files, plan_yaml, prepare_data, tree_bytes, warm_read
from machine import machine_info
from rich.console import Console
from rich.table import Table
from timed_runs import OTHER_LOAD_WARN_CPUS, log_tail, timed_child

from migrator.sizes import MiB, format_size, parse_size

KIND = "objects"
RUN_DIR = "land-objects"  # under the workdir's runs/, as deep as runs/<kind>
LAND = "migrator land"
AWS = "aws s3 cp"
ROUNDS = 2
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "landing.json"
LANDING_NOTE = (
    "landing: MB/s of source (plaintext) bytes, each tool into a fresh bucket of one moto server"
    " on 127.0.0.1 under SSE-KMS with the same key; migrator land decrypts the archive and"
    " checks the landed digests after landing, aws s3 cp copies the plain files; best of the"
    " rounds, alternating; land/aws ≥ 1.00 means landing is no slower"
)


@dataclass
class LandingRow:
    tool: str  # LAND or AWS
    round: int
    ok: bool
    exit_code: int
    wall_s: float
    source_bytes: int
    landed_objects: int
    landed_bytes: int
    peak_rss_bytes: int
    other_load_cpus: float
    moto_cpus: float  # CPUs the moto server kept busy, per wall second
    log: str  # file name, in the workdir's runs/landing folder
    note: str = ""

    @property
    def mb_s(self) -> float:
        return self.source_bytes / self.wall_s / 1e6 if self.ok and self.wall_s else 0.0


@dataclass
class Landing:
    size: int
    source_objects: int
    source_bytes: int
    aws: peers.Tool
    rows: list[LandingRow] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # what could not be measured, and why

    def best(self, tool: str) -> LandingRow | None:
        done = [row for row in self.rows if row.tool == tool and row.ok]
        return max(done, key=lambda row: row.mb_s) if done else None

    @property
    def ratio(self) -> float | None:
        """Land's best MB/s over aws's best: at least 1.00, landing is no slower."""
        land, aws = self.best(LAND), self.best(AWS)
        return land.mb_s / aws.mb_s if land is not None and aws is not None else None

    def record(self) -> dict[str, object]:
        land, aws = self.best(LAND), self.best(AWS)
        return {
            "size_bytes": self.size,
            "source_objects": self.source_objects,
            "source_bytes": self.source_bytes,
            "aws": asdict(self.aws),
            "rows": [
                {**asdict(row), "mb_s": row.mb_s, "peak_rss_mib": row.peak_rss_bytes / MiB}
                for row in self.rows
            ],
            "best_land_mb_s": land.mb_s if land is not None else None,
            "best_aws_mb_s": aws.mb_s if aws is not None else None,
            "land_over_aws": self.ratio,
            "messages": self.messages,
            "note": LANDING_NOTE,
        }


def landing_plan(level: int, endpoint_url: str, bucket: str, key_arn: str) -> str:
    """bench.py's objects plan (local archive) with a landing bucket on moto under SSE-KMS."""
    plan = yaml.safe_load(plan_yaml(KIND, level))
    plan["residency"] = {"aws_partitions": ["aws"], "allow_loopback": True}
    plan["datasets"][0]["landing"] = {
        "bucket": {
            "kind": "s3",
            "bucket": bucket,
            "region": peers.REGION,
            "endpoint_url": endpoint_url,
            "sse_kms_key_id": key_arn,
        }
    }
    return orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode() + "\n"  # JSON is YAML


def _bucket(tool: str, round_: int) -> str:
    return f"bench-{'land' if tool == LAND else 'aws'}-{round_}"


class _Site:
    """The moto server, its KMS key and the archive: what every round shares."""

    def __init__(self, workdir: Path, level: int, moto: peers.Moto, log: IO[bytes]) -> None:
        from migrator.demo.motoserver import kms_client

        self.workdir = workdir
        self.level = level
        self.moto = moto
        self.run_dir = workdir / "runs" / RUN_DIR
        self.logs = workdir / "runs" / "landing"
        self.source = workdir / "data" / KIND
        self.env = peers.s3_env(self.run_dir)
        key = kms_client(moto.endpoint_url, peers.REGION).create_key(Description="landing bench")
        self.key_arn: str = key["KeyMetadata"]["Arn"]
        self.migrator = [sys.executable, "-m", "migrator"]
        self.log = log

    def write_plan(self, bucket: str) -> None:
        plan = landing_plan(self.level, self.moto.endpoint_url, bucket, self.key_arn)
        (self.run_dir / "plan.yaml").write_text(plan, encoding="utf-8")

    def archive(self) -> str:
        """Migrates the objects into the local archive, untimed; "" or why it failed."""
        shutil.rmtree(self.run_dir, ignore_errors=True)  # old state would make it a no-op
        self.run_dir.mkdir(parents=True)
        self.write_plan(_bucket(LAND, 0))
        for argv in ([*self.migrator, "keys", "init", "kek.key"], [*self.migrator, "run", "plan.yaml"]):
            timed = timed_child(argv, cwd=self.run_dir, log=self.log, env=self.env)
            if timed.exit_code:
                return f"`migrator {argv[3]}` exited with {timed.exit_code}"
        return ""

    def timed(self, tool: str, round_: int, source_objects: int) -> LandingRow:
        bucket = _bucket(tool, round_)
        self.moto.create_bucket(bucket)
        if tool == LAND:
            self.write_plan(bucket)
            argv, cwd = [*self.migrator, "land", "plan.yaml"], self.run_dir
        else:
            argv, cwd = self._aws_argv(bucket), self.workdir
        log_name = f"{'land' if tool == LAND else 'aws-s3-cp'}-{round_}.log"
        with (self.logs / log_name).open("wb") as log:
            moto_before = self.moto.cpu_seconds()
            timed = timed_child(argv, cwd=cwd, log=log, env=self.env, timeout=peers.PEER_TIMEOUT_S)
        wall = timed.wall_s or 1e-9
        moto_cpus = (self.moto.cpu_seconds() - moto_before) / wall
        count, stored = self.moto.bucket_usage(bucket)
        note = self._problem(bucket, count, stored, source_objects) if not timed.exit_code else ""
        self._empty(bucket)
        return LandingRow(
            tool,
            round_,
            timed.exit_code == 0 and not note,
            timed.exit_code,
            timed.wall_s,
            tree_bytes(self.source),
            count,
            stored,
            timed.peak_rss_bytes,
            max(0.0, timed.other_load_cpus - moto_cpus),  # moto serves the run: not other load
            moto_cpus,
            log_name,
            note,
        )

    def _aws_argv(self, bucket: str) -> list[str]:
        assert self.aws_path is not None
        return [
            self.aws_path,
            "s3",
            "cp",
            "--recursive",
            "--only-show-errors",
            "--no-progress",
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            self.key_arn,
            str(self.source),
            f"s3://{bucket}/",
            "--endpoint-url",
            self.moto.endpoint_url,
        ]

    aws_path: str | None = None

    def _problem(self, bucket: str, count: int, stored: int, objects: int) -> str:
        """Why the bucket does not hold the source under the key, or ""."""
        from migrator.demo.motoserver import s3_client

        source = tree_bytes(self.source)
        if (count, stored) != (objects, source):
            return f"landed {count} objects, {stored} bytes; the source has {objects}, {source}"
        client = s3_client(self.moto.endpoint_url, peers.REGION)
        first = client.list_objects_v2(Bucket=bucket, MaxKeys=1).get("Contents", [])
        if first:
            head = client.head_object(Bucket=bucket, Key=first[0]["Key"])
            if head.get("ServerSideEncryption") != "aws:kms" or head.get("SSEKMSKeyId") not in (
                self.key_arn,
                self.key_arn.rsplit("/", 1)[-1],
            ):
                return f"{first[0]['Key']} is not under SSE-KMS with the bench's key"
        return ""

    def _empty(self, bucket: str) -> None:
        from migrator.demo.motoserver import s3_client

        client = s3_client(self.moto.endpoint_url, peers.REGION)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)


def measure_landing(
    workdir: Path,
    level: int,
    console: Console,
    aws: peers.Tool | None = None,
    rounds: int = ROUNDS,
) -> Landing:
    """Archives data/objects (already generated), then times land and aws s3 cp, alternating."""
    logs = workdir / "runs" / "landing"
    logs.mkdir(parents=True, exist_ok=True)
    if aws is None:
        with (logs / "install.log").open("wb") as log:
            aws = peers.find_awscli(log)
        console.print(aws.describe(), markup=False)
    source = workdir / "data" / KIND
    result = Landing(0, len(files(source)), tree_bytes(source), aws)
    with (logs / "moto.log").open("wb") as log, peers.moto_server(log, workdir) as moto:
        site = _Site(workdir, level, moto, log)
        site.aws_path = aws.path
        console.print(f"archiving {KIND} for landing (untimed) ...")
        error = site.archive()
        if error:
            result.messages.append(f"landing skipped: the archive could not be made ({error})")
            return result
        tools = [LAND] + ([AWS] if aws.path is not None else [])
        if aws.path is None:
            result.messages.append(f"{AWS} row skipped: {aws.describe()}")
        for round_ in range(1, rounds + 1):
            for tool in tools:
                console.print(f"{tool} into S3 on moto, round {round_} ...")
                result.rows.append(site.timed(tool, round_, result.source_objects))
    return result


def landing_table(result: Landing, warnings: list[str]) -> Table:
    table = Table(title="landing objects into S3 on moto (SSE-KMS)", title_justify="left")
    columns = ("row", "round", "MB/s", "wall s", "peak RSS MiB", "moto CPUs", "land / aws")
    for column in columns:
        table.add_column(column, justify="left" if column == "row" else "right")
    best = [result.best(LAND), result.best(AWS)]
    for row in result.rows:
        label = f"{row.tool}(objects)"
        if row.other_load_cpus > OTHER_LOAD_WARN_CPUS:
            warnings.append(
                f"other processes kept {row.other_load_cpus:.2f} CPUs busy during {label} round"
                f" {row.round}: its figures are unreliable"
            )
        if not row.ok:
            why = row.note or f"exit {row.exit_code}"
            table.add_row(label, str(row.round), "FAILED", why, "", "", "")
            continue
        ratio = result.ratio if row is result.best(LAND) else None
        table.add_row(
            label + (" best" if any(row is b for b in best) else ""),
            str(row.round),
            f"{row.mb_s:,.0f}",
            f"{row.wall_s:.1f}",
            f"{row.peak_rss_bytes / MiB:,.0f}",
            f"{row.moto_cpus:.2f}",
            f"{ratio:.2f}" if ratio is not None else "",
        )
    return table


def print_landing(console: Console, result: Landing, workdir: Path) -> None:
    warnings: list[str] = []
    console.print(landing_table(result, warnings))
    console.print(
        f"source: {result.source_objects:,} objects, {format_size(result.source_bytes)};"
        f" {result.aws.describe()}",
        markup=False,
    )
    if result.ratio is not None:
        console.print(f"land / aws s3 cp: {result.ratio:.2f} (best of each)")
    console.print(f"note: {LANDING_NOTE}")
    for message in result.messages:
        console.print(message, markup=False, style="yellow")
    for row in result.rows:
        if not row.ok:
            console.print(f"{row.tool} round {row.round} failed; last lines of its log:", style="red")
            console.print(log_tail(workdir / "runs" / "landing" / row.log), markup=False)
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="64MiB", help="objects to land")
    parser.add_argument("--level", type=int, default=3, help="zstd level of the archive")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed rounds of each tool")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--workdir", type=Path, help="keep data here and reuse it (default: temp)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-bench-landing-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        prepare_data(workdir / "data", size, console, [KIND])
        warm_read(workdir / "data" / KIND)
        result = measure_landing(workdir, args.level, console, rounds=args.rounds)
        result.size = size
        print_landing(console, result, workdir)
        record = {"machine": machine_info(zstd_level=args.level), "landing": result.record()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"results written to {args.json}")
        return 0 if result.best(LAND) is not None else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Landing throughput: `migrator land` of the objects dataset into S3 on moto, beside
`aws s3 cp --recursive` of the same plaintext files, both under SSE-KMS with one key.

    python bench/landing.py [--size 256MiB] [--level 3] [--rounds 2] [--workdir DIR]
                            [--json out.json]

The objects kind (datasets.py) is migrated once, untimed, into a local archive (runs/land-objects:
the plan of bench.py's objects run plus a `landing` bucket). Then, in one moto server on
127.0.0.1, each round times (a) `migrator land plan.yaml` as a user runs it (landing, then the
check of the landed digests) into a fresh bucket, and (b) `aws s3 cp --recursive data/objects
--sse aws:kms --sse-kms-key-id ARN` into another; the rounds alternate (land, aws, land, aws) and
the best of each tool counts. A bucket counts only if it ends up with the source's objects and
bytes under the key; it is emptied after its round, so moto holds one round's bytes at a time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import peers
import yaml
from datasets import KINDS, files, plan_yaml, prepare_data, tree_bytes, warm_read
from machine import machine_info
from rich.console import Console
from rich.table import Table
from timed_runs import OTHER_LOAD_WARN_CPUS, log_tail, timed_child

from migrator.sizes import MiB, format_size, parse_size

KIND = "objects"
LAND = "migrator land"
AWS = "aws s3 cp"
ROUNDS = 2
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "landing.json"
# The `s` cell of the dataset's row in the table `migrator land` prints: its landing phase alone.
_PHASE_ROW = re.compile(rf"^\W*{KINDS[KIND].dataset}\W.*?([0-9.]+)\W*$", re.MULTILINE)
LANDING_NOTE = (
    "landing: MB/s of source (plaintext) bytes, whole command, each tool into a fresh bucket of"
    " one moto server on 127.0.0.1 under SSE-KMS with the same key; migrator land decrypts the"
    " archive, lands, then checks the landed digests (a HEAD per object), aws s3 cp uploads the"
    " plain files; best of the rounds, run alternately; land / aws ≥ 1.00: landing is no"
    " slower. `phase MB/s` is land's landing phase alone (its own report), without start-up"
    " and the check"
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
    phase_s: float | None = None  # land: its landing phase, as it reports it
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.tool}({KIND})"

    @property
    def mb_s(self) -> float:
        return self.source_bytes / self.wall_s / 1e6 if self.ok and self.wall_s else 0.0

    @property
    def phase_mb_s(self) -> float | None:
        return self.source_bytes / self.phase_s / 1e6 if self.ok and self.phase_s else None


@dataclass
class Landing:
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

    @property
    def failed(self) -> bool:
        """No land round succeeded (a missing or failed aws row is reported, not fatal)."""
        return self.best(LAND) is None

    def record(self) -> dict[str, object]:
        land, aws = self.best(LAND), self.best(AWS)
        return {
            "source_objects": self.source_objects,
            "source_bytes": self.source_bytes,
            "aws": asdict(self.aws),
            "rows": [
                {
                    **asdict(row),
                    "mb_s": row.mb_s,
                    "phase_mb_s": row.phase_mb_s,
                    "peak_rss_mib": row.peak_rss_bytes / MiB,
                }
                for row in self.rows
            ],
            "best_land_mb_s": land.mb_s if land is not None else None,
            "best_land_phase_mb_s": land.phase_mb_s if land is not None else None,
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


def landing_phase_s(output: str) -> float | None:
    found = _PHASE_ROW.findall(output)
    return float(found[-1]) if found else None


class LandingSite:
    """What every round shares: the moto server, its KMS key, the archive, the AWS CLI."""

    def __init__(self, workdir: Path, level: int, moto: peers.Moto, aws: str | None) -> None:
        from migrator.demo.motoserver import kms_client

        self.workdir = workdir
        self.level = level
        self.moto = moto
        self.aws = aws
        self.run_dir = workdir / "runs" / "land-objects"  # as deep as runs/<kind>
        self.logs = workdir / "runs" / "landing"
        self.source = workdir / "data" / KIND
        self.source_bytes = tree_bytes(self.source)  # what each round must land
        self.env = peers.s3_env(self.run_dir)
        self.migrator = [sys.executable, "-m", "migrator"]
        key = kms_client(moto.endpoint_url, peers.REGION).create_key(Description="landing bench")
        self.key_arn: str = key["KeyMetadata"]["Arn"]

    def write_plan(self, bucket: str) -> None:
        plan = landing_plan(self.level, self.moto.endpoint_url, bucket, self.key_arn)
        (self.run_dir / "plan.yaml").write_text(plan, encoding="utf-8")

    def archive(self) -> str:
        """Migrates the objects into the local archive, untimed; "" or why it failed."""
        shutil.rmtree(self.run_dir, ignore_errors=True)  # old state: a no-op run, landed shards
        self.run_dir.mkdir(parents=True)
        self.write_plan("bench-land-0")
        with (self.logs / "archive.log").open("wb") as log:
            for command in (["keys", "init", "kek.key"], ["run", "plan.yaml"]):
                timed = timed_child(
                    [*self.migrator, *command], cwd=self.run_dir, log=log, env=self.env
                )
                if timed.exit_code:
                    return f"`migrator {command[0]}` exited with {timed.exit_code}, see archive.log"
        return ""

    def timed(self, tool: str, round_: int, objects: int) -> LandingRow:
        """One timed run of `tool` into a fresh bucket, checked, then emptied."""
        bucket = f"bench-{'land' if tool == LAND else 'aws'}-{round_}"
        self.moto.create_bucket(bucket)
        if tool == LAND:
            self.write_plan(bucket)  # a new bucket: no shard of it is landed yet
            argv, cwd = [*self.migrator, "land", "plan.yaml"], self.run_dir
        else:
            argv, cwd = self._aws_argv(bucket), self.workdir
        log_name = f"{'land' if tool == LAND else 'aws-s3-cp'}-{round_}.log"
        with (self.logs / log_name).open("wb") as log:
            moto_before = self.moto.cpu_seconds()
            timed = timed_child(argv, cwd=cwd, log=log, env=self.env, timeout=peers.PEER_TIMEOUT_S)
        moto_cpus = (self.moto.cpu_seconds() - moto_before) / timed.wall_s if timed.wall_s else 0.0
        count, stored = self.moto.bucket_usage(bucket)
        note = "" if timed.exit_code else self._problem(bucket, count, stored, objects)
        self._empty(bucket)
        output = (self.logs / log_name).read_text(errors="replace")
        return LandingRow(
            tool,
            round_,
            timed.exit_code == 0 and not note,
            timed.exit_code,
            timed.wall_s,
            self.source_bytes,
            count,
            stored,
            timed.peak_rss_bytes,
            max(0.0, timed.other_load_cpus - moto_cpus),  # moto serves the run: not other load
            moto_cpus,
            log_name,
            landing_phase_s(output) if tool == LAND else None,
            note,
        )

    def _aws_argv(self, bucket: str) -> list[str]:
        assert self.aws is not None
        return [
            self.aws,
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

    def _problem(self, bucket: str, count: int, stored: int, objects: int) -> str:
        """Why the bucket does not hold the source under the key, or ""."""
        from migrator.demo.motoserver import s3_client

        source = self.source_bytes
        if (count, stored) != (objects, source):
            return (
                f"{count} objects, {stored} bytes in the bucket; the source has {objects}, {source}"
            )
        client = s3_client(self.moto.endpoint_url, peers.REGION)
        for item in client.list_objects_v2(Bucket=bucket, MaxKeys=1).get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=item["Key"])
            sse = (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"))
            if sse != ("aws:kms", self.key_arn):
                return f"{item['Key']} is not under SSE-KMS with the bench's key"
        return ""

    def _empty(self, bucket: str) -> None:
        from migrator.demo.motoserver import s3_client

        client = s3_client(self.moto.endpoint_url, peers.REGION)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]
        client.delete_bucket(Bucket=bucket)


def measure_landing(
    workdir: Path,
    level: int,
    console: Console,
    aws: peers.Tool | None = None,
    rounds: int = ROUNDS,
) -> Landing:
    """Archives data/objects (generated already), then times land and aws s3 cp alternately.
    `aws`: the AWS CLI as bench.py's peers found it; None finds (or installs) it here."""
    logs = workdir / "runs" / "landing"
    logs.mkdir(parents=True, exist_ok=True)
    if aws is None:
        with (logs / "install.log").open("wb") as log:
            aws = peers.find_awscli(log)
        console.print(aws.describe(), markup=False)
    source = workdir / "data" / KIND
    result = Landing(len(files(source)), tree_bytes(source), aws)
    tools = [LAND, AWS] if aws.path is not None else [LAND]
    if aws.path is None:
        result.messages.append(f"{AWS} rows skipped: {aws.missing_reason}")
    with (logs / "moto.log").open("wb") as log, peers.moto_server(log, workdir) as moto:
        site = LandingSite(workdir, level, moto, aws.path)
        console.print(f"archiving {KIND} for landing (untimed) ...")
        error = site.archive()
        if error:
            result.messages.append(f"landing skipped: the archive could not be made ({error})")
            return result
        for round_ in range(1, rounds + 1):
            for tool in tools:
                console.print(f"{tool} into S3 on moto, round {round_} of {rounds} ...")
                result.rows.append(site.timed(tool, round_, result.source_objects))
    return result


def landing_table(result: Landing, warnings: list[str]) -> Table:
    table = Table(title="landing objects into S3 on moto, SSE-KMS", title_justify="left")
    columns = ("row", "round", "MB/s", "phase MB/s", "wall s", "peak RSS MiB", "moto CPUs")
    for column in (*columns, "land / aws"):
        table.add_column(column, justify="left" if column == "row" else "right")
    best = [result.best(LAND), result.best(AWS)]
    for row in result.rows:
        if row.other_load_cpus > OTHER_LOAD_WARN_CPUS:
            warnings.append(
                f"other processes kept {row.other_load_cpus:.2f} CPUs busy during {row.label}"
                f" round {row.round}: its figures are unreliable"
            )
        if not row.ok:
            why = row.note or f"exit {row.exit_code}"
            table.add_row(row.label, str(row.round), "FAILED", why, "", "", "", "")
            continue
        ratio = result.ratio if row is best[0] else None
        phase = row.phase_mb_s
        table.add_row(
            row.label + (" best" if any(row is b for b in best) else ""),
            str(row.round),
            f"{row.mb_s:,.0f}",
            f"{phase:,.0f}" if phase is not None else "",
            f"{row.wall_s:.2f}",
            f"{row.peak_rss_bytes / MiB:,.0f}",
            f"{row.moto_cpus:.2f}",
            f"{ratio:.2f}" if ratio is not None else "",
        )
    return table


def print_landing(console: Console, result: Landing, workdir: Path) -> None:
    warnings: list[str] = []
    console.print(landing_table(result, warnings))
    aws = f"; {result.aws.describe()}" if result.aws.path is not None else ""
    landed = f"{result.source_objects:,} objects, {format_size(result.source_bytes)}"
    console.print(f"landed: {landed}{aws}", markup=False)
    if result.ratio is not None:
        console.print(f"land / aws s3 cp: {result.ratio:.2f} (best of each, by MB/s)")
    console.print(f"note: {LANDING_NOTE}")
    for message in result.messages:
        console.print(message, markup=False, style="yellow")
    for row in result.rows:
        if not row.ok:
            console.print(
                f"{row.label} round {row.round} failed; last lines of its log:", style="red"
            )
            console.print(log_tail(workdir / "runs" / "landing" / row.log), markup=False)
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="256MiB", help="objects to land")
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
        print_landing(console, result, workdir)
        record = {"machine": machine_info(zstd_level=args.level), "landing": result.record()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"results written to {args.json}")
        return 1 if result.failed else 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

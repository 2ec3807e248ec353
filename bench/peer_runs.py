"""The peer rows of bench.py: restic and rclone crypt on every kind, and the upload check
(migrator into S3 on moto beside `aws s3 cp` of the same encrypted bytes) on records and
objects; the tools themselves are found and run by peers.py."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import peers
from datasets import plan_yaml
from rich.console import Console
from timed_runs import Run, timed_child

from migrator.sizes import MiB

S3_KINDS = ("records", "objects")  # the upload path is the same for every records kind

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

    def find(self, tool: str, kind: str, target: str = "local") -> peers.PeerRun | None:
        for peer in self.runs:
            if (peer.tool, peer.kind, peer.target) == (tool, kind, target):
                return peer
        return None


def run_peers(
    workdir: Path, level: int, runs: dict[str, Run], console: Console, kinds: Sequence[str]
) -> Peers:
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
    for kind in kinds:
        if restic.path is not None:
            console.print(f"restic backup of {kind} ...")
            result.runs.append(peers.run_restic(restic, timed_child, data, kind, work, logs))
        if rclone.path is not None:
            console.print(f"rclone copy of {kind} to a crypt remote ...")
            result.runs.append(peers.run_rclone(rclone, timed_child, data, kind, work, logs))
    migrator = [sys.executable, "-m", "migrator"]
    for kind in (k for k in kinds if k in S3_KINDS):
        console.print(f"running migrator on {kind} into S3 on moto ...")
        try:
            result.runs.append(
                peers.run_migrator_s3(
                    timed_child,
                    migrator,
                    functools.partial(plan_yaml, kind, level),
                    kind,
                    workdir,
                    logs,
                )
            )
        except Exception as exc:  # moto or its client: the row is skipped, not the report
            result.messages.append(f"s3 migrator({kind}) skipped: {exc}")
        if aws.path is not None:
            _run_aws_cp(aws, workdir, kind, runs.get(kind), result, console)
    return result


def _run_aws_cp(
    aws: peers.Tool, workdir: Path, kind: str, local: Run | None, result: Peers, console: Console
) -> None:
    if local is None or not local.ok:
        result.messages.append(
            f"s3 aws s3 cp({kind}) skipped: run({kind}) failed, so there are no encrypted"
            " bytes to upload"
        )
        return
    console.print(f"aws s3 cp of run({kind})'s output into S3 on moto ...")
    encrypted = workdir / "runs" / kind / "dest"
    logs, work = workdir / "runs" / "peers", workdir / "peers"
    try:
        result.runs.append(
            peers.run_aws_cp(aws, timed_child, encrypted, local.source_bytes, kind, work, logs)
        )
    except Exception as exc:
        result.messages.append(f"s3 aws s3 cp({kind}) skipped: {exc}")


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


def peers_record(result: Peers, runs: dict[str, Run]) -> dict[str, object]:
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

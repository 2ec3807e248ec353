"""bench.py's printed report: the runs against their targets, the peer rows, routing alone, and
the notes and warnings that say how far to trust each figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ceiling import Ceiling
from datasets import CHUNK_SIZE, KINDS
from peer_runs import PEERS_NOTE, Peers, migrator_multiple, s3_vs_local
from rich.console import Console
from rich.table import Table
from routing_cost import RoutingCost, routing_table
from scorecard import TARGETS_NOTE, Check, Scorecard
from timed_runs import OTHER_LOAD_WARN_CPUS, Run

from migrator.sizes import MiB

WARM_NOTE = (
    "the OS page cache cannot be dropped here; every source file was read once, untimed, "
    "so the ceiling and the runs both read from memory"
)

RUN_COLUMNS = (
    "row",
    "MB/s",
    "× ceiling",
    "× restic",
    "× rclone crypt",
    "× disk",
    "compression (restic's)",
    "peak RSS MiB",
)


@dataclass
class Results:
    machine: dict[str, object]
    ceilings: dict[str, Ceiling]
    prims: dict[str, float]
    runs: dict[str, Run]
    cards: dict[str, Scorecard]
    disk_mb_s: float | None = None
    peer_result: Peers | None = None
    routing: Sequence[RoutingCost] = ()


def _cell(check: Check | None, digits: int = 2) -> str:
    if check is None:
        return ""
    if check.value is None:
        return "—"  # applies, but not measured: the peer is missing or failed
    return f"{check.value:,.{digits}f} {check.verdict}"


def _compression_cell(card: Scorecard) -> str:
    mine = f"{card.run.compression:.2f}x"
    check = card.checks.get("compression")
    if check is None:
        return mine
    if card.restic_compression is None:
        return f"{mine} (—)"
    return f"{mine} ({card.restic_compression:.2f}x) {check.verdict}"


def runs_table(results: Results, warnings: list[str]) -> Table:
    table = Table(title="migrator run against its targets", title_justify="left")
    for column in RUN_COLUMNS:
        table.add_column(column, justify="left" if column == "row" else "right")
    for kind, c in results.ceilings.items():
        blanks = [""] * (len(RUN_COLUMNS) - 5)
        compression = f"{c.compression:.2f}x"
        table.add_row(f"ceiling({kind})", f"{c.mb_s:,.0f}", "1.00", *blanks, compression, "")
        if c.contended:
            warnings.append(
                f"other processes kept {c.other_load_cpus:.2f} CPUs busy during ceiling({kind}):"
                " it, and the ratios to it, are unreliable"
            )
    for kind, card in results.cards.items():
        run = card.run
        if run.other_load_cpus > OTHER_LOAD_WARN_CPUS:
            warnings.append(
                f"other processes kept {run.other_load_cpus:.2f} CPUs busy during run({kind}):"
                " its figures are unreliable"
            )
        if not run.ok:
            blanks = [""] * (len(RUN_COLUMNS) - 3)
            table.add_row(f"run({kind})", "FAILED", f"exit {run.exit_code}", *blanks)
            continue
        checks = card.checks
        table.add_row(
            f"run({kind})",
            f"{run.mb_s:,.0f}",
            _cell(checks.get("ceiling")),
            _cell(checks.get("restic")),
            _cell(checks.get("rclone crypt")),
            _cell(checks.get("disk")),
            _compression_cell(card),
            _cell(checks.get("rss"), 0),
        )
    return table


def peers_table(result: Peers, runs: dict[str, Run], warnings: list[str]) -> Table:
    table = Table(title="peers on the same data", title_justify="left")
    for column in ("row", "MB/s", "compression", "peak RSS MiB", "migrator ×"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for peer in result.runs:
        if peer.other_load_cpus > OTHER_LOAD_WARN_CPUS:
            warnings.append(
                f"other processes kept {peer.other_load_cpus:.2f} CPUs busy during {peer.label}:"
                " its figures are unreliable"
            )
        if not peer.ok:
            table.add_row(peer.label, "FAILED", f"exit {peer.exit_code}", "", "")
            continue
        multiple = migrator_multiple(peer, runs, result.runs)
        table.add_row(
            peer.label,
            f"{peer.mb_s:,.0f}",
            f"{peer.compression:.2f}x",
            f"{peer.peak_rss_bytes / MiB:,.0f}",
            f"{multiple:.2f}" if multiple is not None else "",
        )
    return table


def print_report(console: Console, results: Results) -> None:
    warnings: list[str] = []
    console.print(runs_table(results, warnings))
    peer_result = results.peer_result
    if peer_result is not None:
        console.print(peers_table(peer_result, results.runs, warnings))
    if results.routing:
        console.print(routing_table(results.routing))
        for cost in results.routing:
            if not cost.identical:
                warnings.append(
                    f"route_block and route_block_per_record routed {cost.kind} differently"
                )
    machine = results.machine
    if results.disk_mb_s:
        console.print(
            f"destination disk, write + fsync + rename of 16 MiB files on {os.cpu_count()} threads:"
            f" {results.disk_mb_s:,.0f} MB/s (a local destination cannot go faster than this)"
        )
    console.print(
        "single thread MB/s: "
        + ", ".join(f"{name} {value:,.0f}" for name, value in results.prims.items())
    )
    console.print(
        f"machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"Python {machine['python']}, zstd level {machine['zstd_level']}, "
        f"{CHUNK_SIZE // MiB} MiB chunks; MB = 10**6 bytes"
    )
    console.print("kinds: " + "; ".join(f"{k} = {KINDS[k].description}" for k in results.ceilings))
    console.print(f"note: {TARGETS_NOTE}")
    console.print(f"note: {WARM_NOTE}")
    if peer_result is not None:
        _print_peer_notes(console, peer_result, results.runs)
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow")


def _print_peer_notes(console: Console, peer_result: Peers, runs: dict[str, Run]) -> None:
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

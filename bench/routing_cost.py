"""Per-record routing cost, in this process: the block router against the per-record reference.

    python bench/routing_cost.py [--size 64MiB] [--kinds records,records-400,records-csv]
                                 [--workdir DIR] [--json out.json]

Each records kind's files are cut into blocks of whole records as routing cuts them
(RecordBlocks, 8 MiB reads; a CSV's first row is its header, passed as csv_header), at most
SAMPLE_BYTES in all, and every block is routed into 16 shards by `route_block` and by
`route_block_per_record`, the two alternating, best of two passes each. Only the router calls
are timed; both routers' output is hashed untimed and must be identical. bench.py runs this too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import xxhash
from datasets import KINDS, RECORD_KINDS, SHARDS, files, parse_kinds, prepare_data
from rich.console import Console
from rich.table import Table

from migrator.codec.digests import DIGEST_ENTRY
from migrator.records.blocks import DEFAULT_MAX_RECORD, RecordBlocks
from migrator.records.framing import framing_of
from migrator.sizes import MiB, parse_size
from migrator.write.route import BLOCK_BYTES
from migrator.write.route_blocks import (
    BlockResult,
    BlockTask,
    route_block,
    route_block_per_record,
)

SAMPLE_BYTES = 256 * MiB  # the cost is per record: a larger sample only takes longer
PASSES = 2
DELIMITER = ","

Router = Callable[[BlockTask], BlockResult]
ROUTING_COLUMNS = (
    "kind",
    "records",
    "B/record",
    "route_block µs/rec",
    "MB/s",
    "per-record µs/rec",
    "MB/s",
    "speed-up",
    "same output",
)


@dataclass
class RoutingCost:
    kind: str
    records: int
    bytes: int  # of the blocks routed (a CSV's header rows are not in them)
    blocks: int
    block_passes_s: list[float]  # route_block, each pass
    per_record_passes_s: list[float]  # route_block_per_record, each pass
    identical: bool  # both routers gave the same runs, pass after pass

    @property
    def block_s(self) -> float:
        return min(self.block_passes_s)

    @property
    def per_record_s(self) -> float:
        return min(self.per_record_passes_s)

    @property
    def block_us(self) -> float:
        return self.block_s / self.records * 1e6 if self.records else 0.0

    @property
    def per_record_us(self) -> float:
        return self.per_record_s / self.records * 1e6 if self.records else 0.0

    @property
    def block_mb_s(self) -> float:
        return self.bytes / self.block_s / 1e6 if self.block_s else 0.0

    @property
    def per_record_mb_s(self) -> float:
        return self.bytes / self.per_record_s / 1e6 if self.per_record_s else 0.0

    @property
    def speedup(self) -> float:
        """route_block_per_record's time over route_block's: above 1 the block router is faster."""
        return self.per_record_s / self.block_s if self.block_s else 0.0

    def record(self) -> dict[str, object]:
        return {
            **asdict(self),
            "block_us_per_record": self.block_us,
            "block_mb_s": self.block_mb_s,
            "per_record_us_per_record": self.per_record_us,
            "per_record_mb_s": self.per_record_mb_s,
            "speedup": self.speedup,
        }


def block_tasks(folder: Path, kind: str, limit: int = SAMPLE_BYTES) -> list[BlockTask]:
    """The kind's files as routing's BlockTasks (16 shards, records kept), up to `limit` bytes."""
    spec = KINDS[kind]
    is_csv = spec.fmt == "csv"
    tasks: list[BlockTask] = []
    total = 0
    for path in files(folder):
        with path.open("rb") as fh:
            framing = framing_of(DELIMITER if is_csv else None)
            reader = RecordBlocks(fh, framing, str(path), DEFAULT_MAX_RECORD, BLOCK_BYTES)
            header: bytes | None = None
            if is_csv:
                first = reader.first_record()
                if first is None:
                    continue
                header = first[0].removesuffix(b"\r")
            for data, lines_before, offset_before in reader.blocks():
                tasks.append(
                    BlockTask(
                        data=data,
                        fmt=spec.fmt,
                        key_field=spec.key,
                        csv_header=header,
                        delimiter=DELIMITER,
                        shards=SHARDS,
                        path=str(path),
                        lines_before=lines_before,
                        offset_before=offset_before,
                    )
                )
                total += len(data)
                if total >= limit:
                    return tasks
    return tasks


def _timed_pass(router: Router, tasks: Sequence[BlockTask]) -> tuple[float, int, int]:
    """(seconds in the router, records routed, a hash of every run): only the calls are timed."""
    elapsed = 0.0
    records = 0
    digest = xxhash.xxh3_64()
    for task in tasks:
        started = time.perf_counter()
        result = router(task)
        elapsed += time.perf_counter() - started
        for shard, recs, digs, nbytes in result.runs:
            records += len(digs) // DIGEST_ENTRY.size
            digest.update(b"%d:%d:" % (shard, nbytes))
            digest.update(recs)
            digest.update(digs)
        del result
    return elapsed, records, digest.intdigest()


def measure_routing_cost(folder: Path, kind: str) -> RoutingCost:
    tasks = block_tasks(folder, kind)
    block_passes: list[float] = []
    reference_passes: list[float] = []
    outcomes: set[tuple[int, int]] = set()
    routers: tuple[tuple[Router, list[float]], ...] = (
        (route_block, block_passes),
        (route_block_per_record, reference_passes),
    )
    for _ in range(PASSES):  # alternating, so a burst of other load hits both alike
        for router, passes in routers:
            seconds, records, digest = _timed_pass(router, tasks)
            passes.append(seconds)
            outcomes.add((records, digest))
    return RoutingCost(
        kind=kind,
        records=min(records for records, _ in outcomes),
        bytes=sum(len(task.data) for task in tasks),
        blocks=len(tasks),
        block_passes_s=block_passes,
        per_record_passes_s=reference_passes,
        identical=len(outcomes) == 1,
    )


def routing_table(costs: Sequence[RoutingCost]) -> Table:
    table = Table(
        title=f"routing alone, in process ({SHARDS} shards, {BLOCK_BYTES // MiB} MiB blocks,"
        f" best of {PASSES})",
        title_justify="left",
    )
    for column in ROUTING_COLUMNS:
        table.add_column(column, justify="left" if column == "kind" else "right")
    for cost in costs:
        table.add_row(
            cost.kind,
            f"{cost.records:,}",
            f"{cost.bytes / cost.records:,.0f}" if cost.records else "",
            f"{cost.block_us:.2f}",
            f"{cost.block_mb_s:,.0f}",
            f"{cost.per_record_us:.2f}",
            f"{cost.per_record_mb_s:,.0f}",
            f"{cost.speedup:.2f}x",
            "yes" if cost.identical else "NO",
        )
    return table


def measure_all(data_dir: Path, kinds: Sequence[str], console: Console) -> list[RoutingCost]:
    costs: list[RoutingCost] = []
    for kind in (k for k in kinds if k in RECORD_KINDS):
        console.print(f"routing cost of {kind} (route_block against per record) ...")
        costs.append(measure_routing_cost(data_dir / kind, kind))
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="64MiB", help="data per kind")
    parser.add_argument("--kinds", default=",".join(RECORD_KINDS), help="records kinds")
    parser.add_argument("--workdir", type=Path, help="keep data here and reuse it (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        kinds = [k for k in parse_kinds(args.kinds) if k in RECORD_KINDS]
    except ValueError as exc:
        parser.error(str(exc))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-routing-"))
    try:
        prepare_data(workdir / "data", parse_size(args.size), console, kinds)
        costs = measure_all(workdir / "data", kinds, console)
        console.print(routing_table(costs))
        if args.json is not None:
            records = {cost.kind: cost.record() for cost in costs}
            args.json.write_bytes(orjson.dumps(records, option=orjson.OPT_INDENT_2) + b"\n")
        return 0 if all(cost.identical for cost in costs) else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""How a run executes its steps: in the run's own process unless MIGRATOR_RUN_EXECUTOR says
"multiprocess".

A shard run is a few steps in a row (the shard, its blocking checks, its landing), each waiting
for the one before, so a process per step buys no parallelism; with Dagster's default
(multiprocess, spawned) executor each step paid a fresh interpreter that imports Dagster and
loads the plan's definitions again: three times the CPU of a run in one process
(bench/run_overhead.py, docs/PERFORMANCE.md "Per-shard run overhead"). Retry policies, pools,
blocking checks and the per-step events behave the same in both. "multiprocess" isolates each
step's memory, for runs of many shards at once (MIGRATOR_SHARDS_PER_RUN).
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}
DEFAULT_EXECUTOR = "in_process"


def run_executor(setting: str | None = None) -> ExecutorDefinition:
    """The executor of every job and of the asset graph's own runs: `setting`, else
    MIGRATOR_RUN_EXECUTOR, else in process."""
    name = setting or os.environ.get("MIGRATOR_RUN_EXECUTOR") or DEFAULT_EXECUTOR
    if name not in EXECUTORS:
        raise ValueError(f"MIGRATOR_RUN_EXECUTOR must be one of {sorted(EXECUTORS)}, not {name!r}")
    return EXECUTORS[name]

"""What commands open before they act: the plan once its checks pass, its state store if it has
one, the head an auditor exported; and how many threads read the destination back."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from migrator.plan.model import Plan
    from migrator.read.head_file import ExportedHead
    from migrator.state.db import StateDB
    from migrator.write.stage import PlanStage

Stage = TypeVar("Stage", bound="PlanStage")


def checked_plan(
    path: str, *, check_sources: bool = True, allow_loopback: bool = False, rehearsal: bool = False
) -> Plan:
    """The plan, once its residency and FIPS checks pass: every command reads its plan here,
    so none opens a destination, key service or state store the checks refuse (exit 2)."""
    from migrator.plan.model import load_plan  # pydantic: not for `--help`
    from migrator.residency import enforce_residency, loopback_allowed

    plan = load_plan(path, check_sources=check_sources)
    if allow_loopback:
        plan = loopback_allowed(plan)  # the flag travels with the plan, to wiring's checks too
    enforce_residency(plan, rehearsal=rehearsal)
    return plan


def reader_threads() -> int:
    """Threads for commands that read the destination back: I/O bound, so twice the cores."""
    return max(4, (os.cpu_count() or 1) * 2)


def plan_stage(stage: type[Stage], plan: Plan, state: StateDB) -> Stage:
    """A stage that rewrites the destination and the state store together (a compaction, a
    state rebuild), given the plan's store and keys and the reader threads."""
    from migrator.wiring import open_key_provider, open_store

    return stage(plan, open_store(plan), open_key_provider(plan), state, workers=reader_threads())


@contextlib.contextmanager
def existing_state(plan: Plan) -> Iterator[StateDB | None]:
    """The plan's state store if it has one: readers work from the destination without it."""
    from migrator.wiring import open_existing_state

    state = open_existing_state(plan)
    try:
        yield state
    finally:
        if state is not None:
            state.close()


def expected_head(plan: Plan, path: str | None) -> ExportedHead | None:
    from migrator.read.head_file import read_head_file

    return None if path is None else read_head_file(Path(path), plan)

"""The gate's integrity side: a shard is ready only when no check failed since its last full
read-back and a passing check saw the very head manifest the latest generation record names; a
dataset only when no sync of it is left open (a failed or unfinished one).

Why both conditions: a failed check is cleared only by a passing full read-back after it (a
sampled check may miss the damaged chunk, and a sync's new head may still list it in its
chain), and a head nobody checked is not known to be intact, however well its manifest's
digests agree with the source.
"""

from __future__ import annotations

from datetime import UTC, datetime

from migrator.codec.generation import GenerationRecord
from migrator.state.db import StateDB
from migrator.state.tables.verifications import Verdict

REPAIR_HINT = "see docs/REPAIR.md: `migrator repair PLAN --dataset {dataset} --shards {shard}`"
VERIFY_HINT = "run the checks: `migrator verify PLAN --dataset {dataset}` or the verify job"


def integrity_problems(state: StateDB, dataset: str, record: GenerationRecord) -> dict[int, str]:
    """What keeps each shard from counting as checked (shards missing from the map are fine)."""
    found = state.verdicts(dataset)
    out: dict[int, str] = {}
    for head in record.shards:
        mine = found.get(head.shard, [])
        if (failed := standing_failure(mine)) is not None:
            out[head.shard] = _failed(dataset, head.shard, failed)
            continue
        seen = any(v.passed and v.head == head.head and v.head_xxh3 == head.head_xxh3 for v in mine)
        if not seen:
            what = f"generation {head.head}'s manifest was never checked"
            hint = VERIFY_HINT.format(dataset=dataset)
            out[head.shard] = f"integrity not checked: {what}; {hint}"
    return out


def standing_failure(verdicts: list[Verdict]) -> Verdict | None:
    """A shard's newest failed verdict (its verdicts newest first) unless a full read-back
    passed after it."""
    failed = next((v for v in verdicts if not v.passed), None)
    if failed is None or any(_clears(v, failed) for v in verdicts):
        return None
    return failed


def _clears(later: Verdict, failed: Verdict) -> bool:
    """Only a full read-back after a failure clears it (a sample may miss the damaged chunk,
    and a sync's new head may still list it in its chain): a repair ends with one."""
    whole = later.sample >= 1.0 and not later.quick
    return later.passed and whole and later.checked_at > failed.checked_at


def _failed(dataset: str, shard: int, verdict: Verdict) -> str:
    when = datetime.fromtimestamp(verdict.checked_at, UTC).isoformat(timespec="seconds")
    what = verdict.first_problem or "a problem"
    key = verdict.object_key
    where = f" ({key})" if key and key not in what else ""
    more = f" and {verdict.problems - 1} more" if verdict.problems > 1 else ""
    hint = REPAIR_HINT.format(dataset=dataset, shard=shard)
    return (
        f"integrity check failed at {when}: {what}{where}{more}; {hint} (or a full read-back"
        " that passes: `migrator verify`, sample 1)"
    )


def open_sync_problem(state: StateDB, dataset: str, committed: int) -> str | None:
    """A generation opened after the latest committed one and never committed: a sync that
    failed or is still running; switching now would leave its writes behind."""
    for g in state.generations(dataset):
        if g.generation > committed and not g.committed:
            when = datetime.fromtimestamp(g.started_at, UTC).isoformat(timespec="seconds")
            return (
                f"generation {g.generation} ({g.kind}) opened at {when} is not committed:"
                " finish it (run the sync again) before cutting over"
            )
    return None


def failed_checks(state: StateDB, datasets: list[str]) -> list[tuple[str, int, str]]:
    """(dataset, shard, why) of every shard whose newest integrity check failed: what
    `migrator status` lists for the operator to repair."""
    out = []
    for dataset in datasets:
        for shard, mine in sorted(state.verdicts(dataset).items()):
            if (failed := standing_failure(mine)) is not None:
                out.append((dataset, shard, _failed(dataset, shard, failed)))
    return out

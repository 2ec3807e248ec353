"""Integrity verdicts: what the latest check of each shard found, kept so the cutover gate
answers from checks that ran, not from manifests alone (a destination can be tampered with
after it was written)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select

from migrator.state.backend import Backend
from migrator.state.schema import verifications


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check of one shard's head manifest (`head` 0: the shard's chain could not be read)."""

    shard: int
    head: int
    head_xxh3: str | None
    passed: bool
    problems: int
    first_problem: str | None
    object_key: str | None
    sample: float
    quick: bool
    checked_at: float


_SHARD = (
    verifications.c.dataset == bindparam("d"),
    verifications.c.shard == bindparam("s"),
)
_OLDER_PASSES = delete(verifications).where(
    *_SHARD, verifications.c.passed == 1, verifications.c.head < bindparam("h")
)
_CLEARED_FAILURES = delete(verifications).where(
    *_SHARD, verifications.c.passed == 0, verifications.c.checked_at < bindparam("t")
)


class VerificationTable:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def record_verdicts(self, dataset: str, verdicts: list[Verdict]) -> None:
        """One transaction for a verify pass's shards of a dataset."""
        if not verdicts:
            return
        rows = [{"dataset": dataset, **_row(v)} for v in verdicts]
        keys = ["dataset", "shard", "head", "passed"]  # a pass never overwrites a failure
        passes = [{"d": dataset, "s": v.shard, "h": v.head} for v in verdicts if v.passed]
        full = [
            {"d": dataset, "s": v.shard, "t": v.checked_at}
            for v in verdicts
            if v.passed and v.sample >= 1.0 and not v.quick
        ]
        with self.backend.write("record integrity verdicts") as conn:
            conn.execute(self.backend.upsert(verifications, rows, keys), rows)  # one batch
            # Kept small at a month of hourly syncs: a pass makes older heads' passes moot, a
            # full pass the failures before it (what the gate reads, cutover_integrity.py).
            if passes:
                conn.execute(_OLDER_PASSES, passes)
            if full:
                conn.execute(_CLEARED_FAILURES, full)

    def verdicts(self, dataset: str) -> dict[int, list[Verdict]]:
        """Each shard's verdicts, newest first."""
        with self.backend.read() as conn:
            rows = conn.execute(
                select(verifications)
                .where(verifications.c.dataset == dataset)
                .order_by(verifications.c.shard, verifications.c.checked_at.desc())
            ).fetchall()
        out: dict[int, list[Verdict]] = {}
        for r in rows:
            verdict = Verdict(
                int(r.shard),
                int(r.head),
                r.head_xxh3,
                bool(r.passed),
                int(r.problems),
                r.first_problem,
                r.object_key,
                float(r.sample),
                bool(r.quick),
                float(r.checked_at),
            )
            out.setdefault(verdict.shard, []).append(verdict)
        return out


def _row(v: Verdict) -> dict[str, object]:
    return {
        "shard": v.shard,
        "head": v.head,
        "head_xxh3": v.head_xxh3,
        "passed": int(v.passed),
        "problems": v.problems,
        "first_problem": v.first_problem,
        "object_key": v.object_key,
        "sample": v.sample,
        "quick": int(v.quick),
        "checked_at": v.checked_at or time.time(),
    }

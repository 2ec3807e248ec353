"""The landed side of the cutover gate: per shard, what each landing target holds (read from the
target) against the archive's committed head. A shard whose landing lags, runs ahead of the
committed generation, or was changed behind landing's back keeps the gate closed, named."""

from __future__ import annotations

from collections.abc import Callable

from migrator.codec.digests import to_hex
from migrator.codec.generation import GenerationRecord
from migrator.errors import MigratorError
from migrator.keys.keyring import Keyring
from migrator.landing.heads import LandingHeads
from migrator.landing.proof import LandedShard, check_heads
from migrator.landing.targets import DatasetTargets
from migrator.plan.model import DatasetPlan, Plan
from migrator.stores.base import ObjectStore


def landing_sides(
    plan: Plan,
    store: ObjectStore,
    ds: DatasetPlan,
    key: Keyring,
    record: GenerationRecord,
    open_targets: Callable[[Plan, DatasetPlan], DatasetTargets],
) -> dict[int, list[LandedShard]] | str:
    """Each shard's landings against the committed head, or why they cannot be read."""
    heads = LandingHeads(store, plan.name, ds, key, record)  # the committed record alone
    try:
        with open_targets(plan, ds) as targets:
            checked = check_heads(heads, targets)
    except MigratorError as exc:
        return f"cannot read the landing: {exc}"
    out: dict[int, list[LandedShard]] = {}
    for s in checked:
        out.setdefault(s.shard, []).append(s)
    return out


def landed_digest(landed: list[LandedShard]) -> str:
    """The digest shown for the shard's landing: the first target that differs, else any."""
    bad = [s for s in landed if not s.match]
    return to_hex((bad or landed)[0].digest) if landed else to_hex(0)


def landing_problem(landed: list[LandedShard]) -> str | None:
    bad = [s for s in landed if not s.match]
    if not landed:
        return "no landing target answered for the shard"
    if not bad:
        return None
    return "landing lags or differs: " + "; ".join(f"{s.target}: {s.why()}" for s in bad)

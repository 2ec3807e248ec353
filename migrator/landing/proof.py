"""The proof of a landing: per shard, each target's digest and count, computed from what the
target holds, against the digest and count the archive's authenticated manifests state.

A target behind the archive (landing lags), ahead of it, or changed behind landing's back all
show as a mismatch; what a target can name itself (a row whose key no longer hashes to its
shard, an object whose size is not the one landed) is listed with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from migrator.codec.digests import from_hex
from migrator.keys.keyring import load_keyring
from migrator.keys.provider import KeyProvider
from migrator.landing.heads import LandingHeads, live_count
from migrator.landing.target import LandedContent
from migrator.landing.targets import DatasetTargets
from migrator.plan.model import DatasetPlan, Plan
from migrator.state.db import StateDB
from migrator.stores.base import ObjectStore

MAX_NAMED = 20  # problems named per shard and target; the rest are counted


@dataclass
class LandedShard:
    """One shard of one target against the archive's head manifest of the shard."""

    shard: int
    target: str
    expected_digest: int
    expected_count: int
    digest: int
    count: int
    problems: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return (
            not self.problems
            and self.digest == self.expected_digest
            and self.count == self.expected_count
        )

    def why(self) -> str:
        """What is wrong, in a line (empty when it matches)."""
        if self.match:
            return ""
        parts = []
        if self.count != self.expected_count or self.digest != self.expected_digest:
            parts.append(
                f"landed {self.count:,} of {self.expected_count:,}"
                + (", digest differs" if self.digest != self.expected_digest else "")
            )
        shown = self.problems[:MAX_NAMED]
        parts += shown
        if len(self.problems) > len(shown):
            parts.append(f"and {len(self.problems) - len(shown)} more")
        return "; ".join(parts)


def check_heads(
    heads: LandingHeads,
    targets: DatasetTargets,
    shards: Iterable[int] | None = None,
) -> list[LandedShard]:
    """Every selected shard of every target of the dataset, against the head it lands to."""
    ds = heads.ds
    wanted = set(heads.shards()) if shards is None else set(heads.shards()) & set(shards)
    expected: dict[int, tuple[int, int]] = {}
    for shard in sorted(wanted):
        chain = heads.chain(shard)
        expected[shard] = (from_hex(chain[-1].digest), live_count(ds, chain))
    out: list[LandedShard] = []

    def add(target: str, shard: int, content: LandedContent) -> None:
        digest, count = expected[shard]
        out.append(
            LandedShard(
                shard, target, digest, count, content.digest, content.count, content.problems
            )
        )

    if targets.objects is not None:
        contents = targets.objects.contents(ds.shards)
        for shard in expected:
            add(targets.objects.describe(), shard, contents.get(shard, LandedContent()))
    for shard_target in (targets.table, targets.files):
        if shard_target is None:
            continue
        for shard in expected:
            add(shard_target.describe(), shard, shard_target.content(shard))
    out.sort(key=lambda s: (s.shard, s.target))
    return out


def check_landing(
    plan: Plan,
    store: ObjectStore,
    provider: KeyProvider,
    only: set[str] | None = None,
    shards: set[int] | None = None,
    state: StateDB | None = None,
    open_targets: Callable[[Plan, DatasetPlan], DatasetTargets] | None = None,
) -> Iterator[list[LandedShard]]:
    """Each dataset with a landing: its shards checked against the heads they land to (with a
    state store, a shard's newer written manifest; else the latest generation record)."""
    from migrator.landing.targets import open_targets as plan_targets

    opener = open_targets or plan_targets
    for ds in plan.datasets:
        if ds.landing is None or (only and ds.name not in only):
            continue
        key = load_keyring(store, provider, plan.name, ds.name)
        if state is not None:
            state.bind_dataset_key(ds.name, key.first)
        heads = LandingHeads.read(store, plan.name, ds, key, state)
        with opener(plan, ds) as targets:
            yield check_heads(heads, targets, shards)

"""Arguments and options several commands share, and the parsing of option values: a bad value
is a usage error (exit 2) that names its option."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from migrator.sizes import parse_rate, parse_size

if TYPE_CHECKING:
    from migrator.plan.model import Plan

PLAN_FILE = click.argument("plan_file", type=click.Path(dir_okay=False))
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
DATASETS = click.option(
    "--dataset", "datasets", multiple=True, help="Only these datasets (repeatable)."
)
ALLOW_LOOPBACK = click.option(
    "--allow-loopback",
    is_flag=True,
    help="Let a residency policy accept loopback endpoints (tests and rehearsals).",
)
# verify, audit and restore: a head an auditor exported (`audit --export-head`) to hold to
EXPECT_HEAD = click.option(
    "--expect-head",
    type=click.Path(dir_okay=False),
    help="A head `audit --export-head` wrote earlier: a destination older than it, or whose"
    " record of that generation differs, is reported as a rollback.",
)


def rate_value(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def size_value(value: str, option: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def check_dataset_names(plan: Plan, names: Sequence[str]) -> None:
    known = {d.name for d in plan.datasets}
    for name in names:
        if name not in known:
            raise click.BadParameter(
                f"no dataset {name!r} in {plan.plan_path} (it has: {', '.join(sorted(known))})",
                param_hint="--dataset",
            )


def shard_set(value: str | None) -> list[int] | None:
    """`--shards 3,7` or `0-15,20` as sorted shard numbers; None: every shard."""
    if value is None:
        return None
    out: set[int] = set()
    try:
        for part in value.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of shards like 3,7 or 0-15,20") from None
    return sorted(out)

"""The plan's JSON schema, for editors and CI: `python -m migrator.plan.schema [--check]`.

Writes manifests/plan.schema.json (run from the repository root); `--check` only compares and
exits 1 if the committed file is stale, so CI catches a model change without a new schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from migrator.plan.model import Plan

__all__ = ["DEFAULT_SCHEMA_PATH", "main", "plan_json_schema", "render_plan_json_schema"]

DEFAULT_SCHEMA_PATH = Path("manifests") / "plan.schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def plan_json_schema() -> dict[str, Any]:
    """The schema of a plan file as written (sizes may be strings, optional fields omitted)."""
    return {"$schema": _DIALECT, **Plan.model_json_schema(mode="validation")}


def render_plan_json_schema() -> str:
    """The schema as committed: indented, keys sorted, one trailing newline."""
    return json.dumps(plan_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m migrator.plan.schema", description="Write or check the plan JSON schema."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--path", type=Path, default=DEFAULT_SCHEMA_PATH, help="schema file")
    args = parser.parse_args(argv)
    path: Path = args.path
    wanted = render_plan_json_schema()
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if args.check:
        if current == wanted:
            return 0
        state = "is missing" if current is None else "is out of date"
        print(f"{path} {state}: run `python -m migrator.plan.schema`", file=sys.stderr)
        return 1
    if current != wanted:
        if not path.parent.is_dir():
            print(f"{path.parent} does not exist: run from the repository root", file=sys.stderr)
            return 2
        path.write_text(wanted, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dagster for migrator: every dataset of a plan an asset, one partition per shard; a records
dataset's routing an asset upstream of it, one partition per router.

    dagster dev -m pipelines

`defs` comes from pipelines/definitions.py: the plan in MIGRATOR_PLAN (default
manifests/demo.yaml), the resources of MIGRATOR_DEPLOYMENT (default dry-run).
"""

from pipelines.definitions import build_definitions, defs

__all__ = ["build_definitions", "defs"]

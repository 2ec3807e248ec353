"""Resources: thin shells around migrator's adapters (the sets per deployment: definitions.py).

`PlanResource` loads the plan; a target opens the store, key provider and state store a run
writes through, always together, so a dry-run store never meets the real state store.
`CloudTarget` is `migrator.connect`; `StandInTarget` is the dry run's stand-ins: moto or Azurite
on 127.0.0.1 when given, else a local folder; a throwaway KEK; state in
STATE_DIR/dagster-dry-run (apart from the real run's, and from the CLI's dry run, which clears
STATE_DIR/dry-run). Landings go to stand-ins too: landing buckets to the moto or Azurite given,
else folders there; tables to the PostgreSQL on 127.0.0.1 given, else per-shard files. The
sensors read a target's state store alone (`open_generation`, `committed_generation`), never
creating one; a source sensor's first tick opens the target only once a generation is committed
(to read the dataset's key: what the state store keeps of that generation is sealed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from dagster import ConfigurableResource, Failure

from migrator import Connection, connect, load_plan
from migrator.demo.standins import StandIns
from migrator.errors import MigratorError
from migrator.plan.model import Plan
from migrator.read.source_seen import committed_generation
from migrator.repository.names import dry_run_state_file
from migrator.sizes import parse_rate
from migrator.state.db import StateDB
from migrator.wiring import open_existing_state
from migrator.write.fanout import open_generation


@dataclass(frozen=True, slots=True)
class Opened:
    """A target opened for one step: what its run or check goes through, and whether that is
    the dry run's stand-ins."""

    connection: Connection
    dry_run: bool

    @property
    def destination(self) -> str:
        return self.connection.store.describe()

    def object_uri(self, key: str) -> str:
        return f"{self.destination.rstrip('/')}/{key}"


# Dagster's resources subclass ConfigurableResource bare; its type parameter is for factories.
class PlanResource(ConfigurableResource):  # type: ignore[type-arg]
    """The plan file; local sources are not checked at load (they may live on the workers)."""

    path: str

    def load(self) -> Plan:
        return load_plan(self.path, check_sources=False)


class TargetResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where a run writes: store, key provider and state store, opened together."""

    @contextlib.contextmanager
    def open(self, plan: Plan) -> Iterator[Opened]:
        """Runtime errors (store, keys, state) go on to the retry policy; a bad plan, a
        residency refusal, an integrity error or a bad source record fails at once, its cause
        in the run's headline: no retry can fix it, and each would read the source again."""
        try:
            with self._opened(plan) as opened:
                yield opened
        except MigratorError as exc:
            if exc.retryable:
                raise
            raise Failure(f"{type(exc).__name__}: {exc}", allow_retries=False) from exc

    def _opened(self, plan: Plan) -> contextlib.AbstractContextManager[Opened]:
        raise NotImplementedError

    def open_generation(self, plan: Plan, dataset: str) -> int | None:
        """The generation of `dataset` a run is writing now (opened, not yet committed), as
        the target's state store says; a store no run made is not made here."""
        with self._existing_state(plan) as state:
            return open_generation(state, dataset)

    def committed_generation(self, plan: Plan, dataset: str) -> int | None:
        """The latest generation of `dataset` committed, as the target's state store says; a
        store no run made is not made here."""
        with self._existing_state(plan) as state:
            return committed_generation(state, dataset)

    def read_state(self, plan: Plan) -> contextlib.AbstractContextManager[StateDB | None]:
        """The target's state store, to read (the overview); None if no run made one yet."""
        return self._existing_state(plan)

    def _existing_state(self, plan: Plan) -> contextlib.AbstractContextManager[StateDB | None]:
        raise NotImplementedError


class CloudTarget(TargetResource):
    """The plan's own destination and key service (migrator.connect), residency checked first."""

    bandwidth_limit: str = ""  # e.g. "200MiB/s" for this process's uploads; "": the plan's

    @contextlib.contextmanager
    def _opened(self, plan: Plan) -> Iterator[Opened]:
        rate = parse_rate(self.bandwidth_limit) if self.bandwidth_limit else None
        with connect(plan, bandwidth_limit=rate) as conn:
            yield Opened(conn, dry_run=False)

    @contextlib.contextmanager
    def _existing_state(self, plan: Plan) -> Iterator[StateDB | None]:
        state = open_existing_state(plan)
        with contextlib.nullcontext() if state is None else state:
            yield state


class StandInTarget(TargetResource):
    """The dry run (migrator.demo.standins): nothing reaches the plan's clouds, key service,
    landing buckets or databases."""

    s3_endpoint_url: str = ""  # a moto server for S3 destinations, e.g. http://127.0.0.1:5000
    azure_connection_string: str = ""  # Azurite, for Azure destinations
    postgres_url: str = ""  # a PostgreSQL on 127.0.0.1 for landing tables; else files

    @contextlib.contextmanager
    def _opened(self, plan: Plan) -> Iterator[Opened]:
        # Checked as the rehearsal checks the real destination's residency (no secret read).
        with self._stand_ins(plan) as stand_ins:
            keys = stand_ins.kek()
            with stand_ins.state() as state:
                conn = Connection(
                    stand_ins.landing_plan(stand_ins.plan),
                    stand_ins.store(),
                    keys,
                    state,
                    landing_store=stand_ins.landing_store,
                    table_url=stand_ins.table_url,
                )
                yield Opened(conn, dry_run=True)

    def _stand_ins(self, plan: Plan) -> StandIns:
        return StandIns.for_dagster(
            plan,
            s3_endpoint_url=self.s3_endpoint_url or None,
            azure_connection_string=self.azure_connection_string or None,
            postgres_url=self.postgres_url or None,
        )

    @contextlib.contextmanager
    def _existing_state(self, plan: Plan) -> Iterator[StateDB | None]:
        path = dry_run_state_file(StandIns.for_dagster(plan).workdir)
        if not path.exists():
            yield None
            return
        with StateDB.sqlite_file(path) as state:
            yield state

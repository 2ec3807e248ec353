"""What a shard run costs beyond its work: K single-shard runs of a tiny dataset, each launched
through a real DagsterInstance and the default run launcher, as the daemon launches them.

    python bench/run_overhead.py [--runs 6] [--shards N] [--variants in_process,multiprocess]
                                 [--tree NAME=DIR ...] [--json out.json] [--workdir DIR] [--keep]

Each variant gets a `dagster code-server` of its own (production deployment of a fresh copy
of the same objects plan, 4 objects of 16 KiB a shard run, SQLite run storage in a DAGSTER_HOME
of its own); a run is started by `DagsterInstance.launch_run`, so the code server spawns its
run worker exactly as for `dagster dev` or the daemon. Runs go one at a time, the variants
taking turns shard by shard (a noisy machine then hurts all of them alike). Per run: wall
seconds from launch until the run is finished and its processes are gone, Dagster's own
start-to-end, the CPU seconds of the run's processes (the code server's reaped children), the
code server's own CPU meanwhile, and how many processes the run started. Variants:
`in_process` and `multiprocess` set MIGRATOR_RUN_EXECUTOR; `in_process_no_compute_logs` also
turns off Dagster's stdout/stderr capture (a `dagster.yaml` choice); each `--tree NAME=DIR`
runs the pipelines (and migrator) of another tree with its defaults, first, e.g. the last
commit's (`git archive HEAD | tar -x -C DIR`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import psutil
from dagster import DagsterEventType, DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.workspace.context import BaseWorkspaceRequestContext, WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from machine import machine_info

from migrator.keys.local import init_kek_file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "bench" / "results" / "run_overhead.json"
NO_COMPUTE_LOGS = (  # no stdout/stderr capture: no `tail` and watcher processes per step
    "compute_logs:\n  module: dagster.core.storage.noop_compute_log_manager\n"
    "  class: NoOpComputeLogManager\n"
)
# name: (MIGRATOR_RUN_EXECUTOR, more dagster.yaml)
VARIANTS = {
    "in_process": ("in_process", ""),
    "multiprocess": ("multiprocess", ""),
    "in_process_no_compute_logs": ("in_process", NO_COMPUTE_LOGS),
}
JOB = "full_migration_videos"
OBJECTS_PER_SHARD = 4
OBJECT_BYTES = 16 * 1024
POLL_S = 0.05
RUN_TIMEOUT_S = 300.0
REAP_TIMEOUT_S = 20.0
START_TIMEOUT_S = 120.0


@dataclass
class RunCost:
    variant: str
    shard: int
    status: str
    wall_s: float  # launch until finished and its processes reaped
    dagster_s: float  # the run record's start to end
    cpu_s: float  # the run's processes: run worker and any step processes
    server_cpu_s: float  # the code server itself, meanwhile
    processes: int  # processes the run started (seen by polling every POLL_S)
    error: str = ""  # why a failed run failed


@dataclass
class Variant:
    name: str
    tree: Path
    executor: str  # MIGRATOR_RUN_EXECUTOR; "" leaves the tree's default
    instance_yaml: str = ""  # added to the variant's dagster.yaml
    runs: list[RunCost] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        ok = [r for r in self.runs if r.status == "SUCCESS"] or self.runs
        return {
            "count": len(self.runs),
            "succeeded": sum(r.status == "SUCCESS" for r in self.runs),
            "wall_s_median": statistics.median(r.wall_s for r in ok),
            "dagster_s_median": statistics.median(r.dagster_s for r in ok),
            "cpu_s_median": statistics.median(r.cpu_s for r in ok),
            "server_cpu_s_median": statistics.median(r.server_cpu_s for r in ok),
            "processes_median": statistics.median(r.processes for r in ok),
        }


def write_site(root: Path, files: int, shards: int, instance_yaml: str = "") -> Path:
    """A one-dataset objects plan (plan "bench", dataset "videos") and its small source."""
    data = root / "data" / "videos"
    data.mkdir(parents=True)
    for i in range(files):
        (data / f"v{i:04d}.mp4").write_bytes(os.urandom(OBJECT_BYTES))
    init_kek_file(root / "kek.key")
    plan = root / "plan.yaml"
    plan.write_text(
        "version: 1\nname: bench\nstate_dir: state\ncompression_level: 3\nchunk_size: 64KiB\n"
        "memory_budget: 16MiB\nkeys: {provider: local, kek_file: kek.key}\n"
        "destination: {kind: local, path: dest, prefix: bench/}\n"
        "datasets:\n"
        f"  - {{name: videos, kind: objects, source: {{kind: local, path: data/videos}},"
        f" shards: {shards}}}\n"
    )
    (root / "home").mkdir()
    (root / "home" / "dagster.yaml").write_text(f"telemetry:\n  enabled: false\n{instance_yaml}")
    return plan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def code_server(variant: Variant, root: Path) -> Iterator[tuple[psutil.Process, int]]:
    """`dagster code-server` for `-m pipelines` of the variant's tree on root's plan."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    env.update(
        PYTHONPATH=str(variant.tree),
        DAGSTER_HOME=str(root / "home"),
        MIGRATOR_PLAN=str(root / "plan.yaml"),
        MIGRATOR_DEPLOYMENT="production",
    )
    if variant.executor:
        env["MIGRATOR_RUN_EXECUTOR"] = variant.executor
    dagster = str(Path(sys.executable).with_name("dagster"))
    argv = [dagster, "code-server", "start", "-h", "127.0.0.1", "-p", str(port), "-m", "pipelines"]
    log = (root / "code-server.log").open("wb")
    server = subprocess.Popen(argv, cwd=variant.tree, env=env, stdout=log, stderr=log)
    try:
        yield psutil.Process(server.pid), port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def open_location(
    stack: ExitStack, instance: DagsterInstance, port: int, name: str
) -> tuple[BaseWorkspaceRequestContext, CodeLocation]:
    """The code location behind the server on `port`, once the server listens."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"code server {name} did not listen in {START_TIMEOUT_S:.0f}s")
        time.sleep(0.3)
    target = GrpcServerTarget(host="127.0.0.1", port=port, socket=None, location_name=name)
    workspace = stack.enter_context(WorkspaceProcessContext(instance, target))
    request = workspace.create_request_context()
    if not request.has_code_location(name):
        raise RuntimeError(f"code server {name}: {request.get_code_location_error(name)}")
    return request, request.get_code_location(name)


def launch(
    instance: DagsterInstance,
    workspace: BaseWorkspaceRequestContext,
    location: CodeLocation,
    shard: int,
) -> str:
    """A run of JOB for one shard partition, created and launched as the daemon does."""
    repo = location.get_repository("__repository__")
    job = repo.get_full_job(JOB)
    plan = location.get_execution_plan(job, {}, step_keys_to_execute=None, known_state=None)
    snapshot = plan.execution_plan_snapshot
    run = instance.create_run(
        job_name=JOB,
        run_id=None,
        run_config={},
        resolved_op_selection=None,
        step_keys_to_execute=snapshot.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags={**job.tags, "dagster/partition": str(shard)},
        job_snapshot=job.job_snapshot,
        execution_plan_snapshot=snapshot,
        parent_job_snapshot=job.parent_job_snapshot,
        remote_job_origin=job.get_remote_origin(),
        job_code_origin=job.get_python_origin(),
        asset_selection=None,
        asset_check_selection=None,
        asset_graph=repo.asset_graph,
    )
    instance.launch_run(run.run_id, workspace)
    return run.run_id


def cpu(processes: Sequence[psutil.Process]) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of these processes together."""
    own = reaped = 0.0
    for process in processes:
        t = process.cpu_times()
        own, reaped = own + t.user + t.system, reaped + t.children_user + t.children_system
    return own, reaped


def timed_run(
    variant: Variant,
    server: psutil.Process,
    instance: DagsterInstance,
    workspace: BaseWorkspaceRequestContext,
    location: CodeLocation,
    shard: int,
) -> RunCost:
    """One run, from launch until its processes are reaped; the code server's children's CPU
    grows by the run's once they are (each run worker reaps its own step processes)."""
    # `dagster code-server start` serves through a `dagster api grpc` child: the run workers'
    # parent. Both are here before the run; whatever appears meanwhile is the run's.
    servers = [server, *server.children(recursive=True)]
    before = {p.pid for p in servers}
    own0, reaped0 = cpu(servers)
    started = time.perf_counter()
    run_id = launch(instance, workspace, location, shard)
    seen: set[int] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        children = _run_processes(server)
        seen |= children - before
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            # A process not yet reaped has not added its CPU to the server's children's.
            deadline = min(deadline, time.monotonic() + REAP_TIMEOUT_S)
            if not children & seen:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{variant.name}: run {run_id} not done and reaped in time")
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    own1, reaped1 = cpu(servers)
    record = instance.get_run_record_by_id(run_id)
    span = 0.0
    if record is not None and record.start_time and record.end_time:
        span = record.end_time - record.start_time
    return RunCost(
        variant=variant.name,
        shard=shard,
        status=run.status.value if run is not None else "?",
        wall_s=round(wall, 3),
        dagster_s=round(span, 3),
        cpu_s=round(reaped1 - reaped0, 3),
        server_cpu_s=round(own1 - own0, 3),
        processes=len(seen),
        error="" if run is None or run.status.value == "SUCCESS" else failure(instance, run_id),
    )


def failure(instance: DagsterInstance, run_id: str) -> str:
    """The first failure a run's event log holds, in one line."""
    for kind in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
        for entry in instance.all_logs(run_id, of_type=kind):
            event = entry.dagster_event
            data = event.event_specific_data if event is not None else None
            error = getattr(data, "error", None)
            text = error.to_string() if error is not None else entry.message or ""
            return " ".join(text.split())[:300]
    return "no failure event"


def _run_processes(server: psutil.Process) -> set[int]:
    """The code server's descendants but multiprocessing's resource trackers, which outlive
    the runs that start them."""
    pids = set()
    for process in server.children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(process.cmdline()):
                pids.add(process.pid)
        except psutil.ZombieProcess:
            pids.add(process.pid)
        except psutil.Error:
            continue
    return pids


def measure(variants: Sequence[Variant], runs: int, shards: int, workdir: Path) -> None:
    """Every variant up at once; shard by shard, each variant's run of that shard in turn."""
    with ExitStack() as stack:
        live = []
        for variant in variants:
            root = workdir / variant.name
            shutil.rmtree(root, ignore_errors=True)  # a reused --workdir: fresh state each time
            write_site(root, runs * OBJECTS_PER_SHARD, shards, variant.instance_yaml)
            instance = stack.enter_context(
                DagsterInstance.from_ref(InstanceRef.from_dir(str(root / "home")))
            )
            server, port = stack.enter_context(code_server(variant, root))
            workspace, location = open_location(stack, instance, port, variant.name)
            live.append((variant, server, instance, workspace, location))
        for shard in range(runs):
            for variant, server, instance, workspace, location in live:
                cost = timed_run(variant, server, instance, workspace, location, shard)
                variant.runs.append(cost)
                print(
                    f"{cost.variant:>12} shard {shard}: {cost.status} wall {cost.wall_s:.2f}s"
                    f" dagster {cost.dagster_s:.2f}s cpu {cost.cpu_s:.2f}s"
                    f" server {cost.server_cpu_s:.2f}s processes {cost.processes}"
                    + (f"\n    {cost.error}" if cost.error else ""),
                    flush=True,
                )


def print_table(variants: Sequence[Variant]) -> None:
    print()
    print("| variant | runs ok | wall s | Dagster start-end s | CPU s | server CPU s | processes |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        s = v.summary()
        print(
            f"| {v.name} | {s['succeeded']:.0f}/{s['count']:.0f} | {s['wall_s_median']:.2f}"
            f" | {s['dagster_s_median']:.2f} | {s['cpu_s_median']:.2f}"
            f" | {s['server_cpu_s_median']:.2f} | {s['processes_median']:.0f} |"
        )
    print("(medians over the runs)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=6, help="single-shard runs per variant")
    parser.add_argument("--shards", type=int, help="shards of the dataset (default: --runs)")
    every = ",".join(VARIANTS)
    parser.add_argument("--variants", default=every, help=f"of {every}")
    parser.add_argument(
        "--tree", action="append", default=[], help="NAME=DIR: another tree's pipelines, first"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--workdir", type=Path, help="where the sites go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if unknown := sorted(set(names) - set(VARIANTS)):
        parser.error(f"unknown variants {unknown}")
    variants = []
    for tree in args.tree:
        name, _, folder = tree.partition("=")
        if not name or not folder or not Path(folder, "pipelines").is_dir():
            parser.error(f"--tree {tree}: NAME=DIR, DIR holding pipelines/")
        variants.append(Variant(name, Path(folder).resolve(), ""))
    variants += [Variant(name, REPO, *VARIANTS[name]) for name in names]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="migrator-overhead-"))
    try:
        measure(variants, args.runs, max(args.shards or args.runs, args.runs), workdir)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(variants)
    record = {
        "machine": machine_info(),
        "job": JOB,
        "runs_per_variant": args.runs,
        "shards": max(args.shards or args.runs, args.runs),
        "variants": {
            v.name: {**v.summary(), "runs": [asdict(r) for r in v.runs]} for v in variants
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"results written to {args.json}")
    failed = [r for v in variants for r in v.runs if r.status != "SUCCESS"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

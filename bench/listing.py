"""Listing benchmark: an S3 source listed sequentially and in parallel runs, side by side.

    python bench/listing.py [--objects 20000] [--workers 8] [--rtt-ms 20] [--key-us 150]
                            [--repeat 3] [--no-as-is] [--json OUT]

A moto server in a process of its own holds `--objects` keys under one prefix (seeded inside
that process: uploading them would take longer than the benchmark). The source is listed with
`list(source.list())` (one page after another) and with `list_source_once` (key ranges,
`--workers` threads), alternately, best of `--repeat`; both listings must be equal.

moto as it is sorts the whole bucket for every listing request, in one Python process: a
probe for one key costs as much as a page, so that row shows what the extra requests cost
where the service is the bottleneck (`--no-as-is` skips it). The second server answers from a
sorted index, as a real service does, and is measured as it is and with a cloud service's
time added to every request on the client: `--rtt-ms` for the round trip plus `--key-us` per
key the answer holds (the defaults make a page of 1,000 keys take 170 ms, a one-key probe
20 ms, about what S3 takes in its region). Only the ratios measured here, in the same run,
mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from machine import machine_info

from migrator.sources.listing import list_source_once
from migrator.sources.s3 import S3Source

BUCKET = "bench-listing"
PREFIX = "exports"
START_TIMEOUT_S = 120.0
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
}

# Starts moto, makes the bucket and its keys through moto's own backend, prints the URL and
# serves until stdin closes. Keys: a flat run of numbered exports and a tree of folders.
# "indexed": moto answers a listing from a sorted index of the bucket's names, as a real
# service does, instead of sorting the whole bucket for every request.
MOTO_SCRIPT = """\
import bisect
import sys
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import S3Backend, s3_backends
from migrator.demo.motoserver import s3_client, start_moto_server
bucket, prefix, count, indexed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
as_is = S3Backend.list_objects_v2
names_of = {}

def from_index(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
    if delimiter:
        return as_is(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
    names = names_of.get(bucket.name)
    if names is None:
        names = names_of[bucket.name] = sorted(bucket.keys.keys())
    prefix = prefix or ""
    start = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
    at = max(bisect.bisect_right(names, start) if start else 0, bisect.bisect_left(names, prefix))
    picked = []
    for name in names[at : at + max_keys + 1]:
        if not name.startswith(prefix):
            break
        picked.append(bucket.keys[name])
    return self._truncate_result(picked, max_keys)

if indexed:
    S3Backend.list_objects_v2 = from_index
server = start_moto_server("127.0.0.1")
s3_client(server.endpoint_url).create_bucket(Bucket=bucket)
backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
for i in range(count):
    if i % 2:
        name = f"{prefix}/part-{i:07d}.jsonl"
    else:
        name = f"{prefix}/tenant={i % 37:02d}/day={i % 11:02d}/clip {i}.mp4"
    backend.put_object(bucket, name, b"x" * (i % 64))
print(server.endpoint_url, flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass
class Row:
    server: str
    service_model: str  # what is added to each request on the client
    sequential_s: float
    parallel_s: float
    sequential_requests: int
    parallel_requests: int
    objects: int
    server_cpu_s: float = 0.0

    @property
    def ratio(self) -> float:
        return self.sequential_s / self.parallel_s


class Service:
    """Counts ListObjectsV2 requests and adds what a cloud service takes for each: a round
    trip, and time for each key of the answer (after the call: the thread waits as long)."""

    def __init__(self, rtt_s: float, key_s: float) -> None:
        self.rtt_s, self.key_s = rtt_s, key_s
        self.count = 0

    def __call__(self, parsed: dict[str, Any], **_: Any) -> None:
        self.count += 1  # += under the GIL: close enough for a count of requests
        delay = self.rtt_s + self.key_s * len(parsed.get("Contents", []))
        if delay:
            time.sleep(delay)


def source(endpoint: str, workers: int, service: Service) -> S3Source:
    src = S3Source(BUCKET, PREFIX, endpoint_url=endpoint, max_pool_connections=2 * workers)
    src._client.meta.events.register("after-call.s3.ListObjectsV2", service)
    return src


def best_of(repeat: int, listing: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    best, result = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        result = listing()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(endpoint: str, workers: int, model: tuple[float, float], repeat: int) -> Row:
    seq_service, par_service = Service(*model), Service(*model)
    seq_src = source(endpoint, workers, seq_service)
    par_src = source(endpoint, workers, par_service)
    seq_s = par_s = float("inf")
    whole: list[Any] = []
    for _ in range(repeat):  # alternately, so a slower moment of the machine hits both
        s, whole = best_of(1, lambda: list(seq_src.list()))
        p, parallel = best_of(1, lambda: list_source_once(par_src, workers=workers))
        if parallel != whole:
            raise SystemExit("the parallel listing differs from the sequential one")
        seq_s, par_s = min(seq_s, s), min(par_s, p)
    rtt_ms, key_us = model[0] * 1000, model[1] * 1_000_000
    return Row(
        "",
        f"+{rtt_ms:.0f} ms +{key_us:.0f} us/key" if any(model) else "none",
        seq_s,
        par_s,
        seq_service.count // repeat,
        par_service.count // repeat,
        len(whole),
    )


@contextmanager
def moto(objects: int, indexed: bool) -> Iterator[tuple[str, psutil.Process]]:
    """A seeded moto server in a process of its own: (endpoint URL, its process)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(ENV)
    argv = [sys.executable, "-c", MOTO_SCRIPT, BUCKET, PREFIX, str(objects), str(int(indexed))]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        if process.stdout is None:
            raise SystemExit("moto: no stdout")
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        endpoint = process.stdout.readline().decode().strip() if ready else ""
        if not endpoint.startswith("http://"):
            raise SystemExit("moto did not start")
        yield endpoint, psutil.Process(process.pid)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--key-us", type=float, default=150.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-as-is", action="store_true", help="skip moto as it is")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.update(ENV)

    cloud = (args.rtt_ms / 1000, args.key_us / 1_000_000)
    runs = [] if args.no_as_is else [("moto as is", False, [(0.0, 0.0)])]
    runs.append(("indexed moto", True, [(0.0, 0.0), cloud]))
    rows = []
    for server, indexed, models in runs:
        print(f"seeding {args.objects:,} keys into {server} (a process of its own) ...")
        with moto(args.objects, indexed) as (endpoint, process):
            for model in models:
                before = cpu_seconds(process)
                row = measure(endpoint, args.workers, model, args.repeat)
                row.server, row.server_cpu_s = server, cpu_seconds(process) - before
                rows.append(row)
                print(
                    f"{server}, service time {row.service_model}: sequential"
                    f" {row.objects / row.sequential_s:,.0f} objects/s"
                    f" ({row.sequential_requests} requests), parallel"
                    f" {row.objects / row.parallel_s:,.0f} objects/s"
                    f" ({row.parallel_requests} requests, {args.workers} threads):"
                    f" {row.ratio:.2f}x   [server CPU {row.server_cpu_s:.1f} s]",
                    flush=True,
                )
    report = {
        "machine": machine_info(objects=args.objects, workers=args.workers),
        "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
    }
    out = args.json or Path(__file__).parent / "results" / "listing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()

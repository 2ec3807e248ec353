"""`migrator plan --estimate`: a petabyte plan forecast without listing a bucket, and a rate
measured on this machine when none is given."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrator.forecast.estimate import estimate_run
from migrator.forecast.sizing import size_plan
from migrator.forecast.worker import WorkerRates
from migrator.plan.model import load_plan
from migrator.plan.schema import plan_json_schema
from tests.planfiles import PROFILES, VIDEOS, run_cli, write_objects, write_plan, write_profiles

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
PETABYTE = MANIFESTS / "petabyte.yaml"
MiB = 1024 * 1024
STORAGE_USD_PER_GB_MONTH, PUT_USD_PER_1000, GET_USD_PER_1000 = 0.039, 0.0055, 0.00044


def plan_estimate(*args: str, cwd: Path) -> str:
    done = run_cli("plan", PETABYTE, "--estimate", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def estimate_json(*args: str, cwd: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(plan_estimate(*args, "--json", cwd=cwd))
    return doc


def rows(out: str) -> dict[str, list[str]]:
    """Table rows by their first cell (its first table's), each as its stripped cells."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            found.setdefault(cells[0], cells)
    return found


def hours(cell: str) -> float:
    match = re.match(r"([\d,.]+) h \(", cell)
    assert match, cell
    return float(match[1].replace(",", ""))


# --- the petabyte plan, with a given rate --------------------------------------------------


def test_petabyte_plan_is_valid_and_sized_from_expected_size_alone() -> None:
    import jsonschema  # in requirements.lock: a missing one fails, never skips

    jsonschema.validate(yaml.safe_load(PETABYTE.read_text(encoding="utf-8")), plan_json_schema())
    plan = load_plan(PETABYTE)
    assert plan.destination.kind == "s3" and plan.destination.region == "us-gov-west-1"
    assert plan.keys.provider == "aws-kms" and plan.residency is not None
    assert all(d.source.kind == "s3" and d.source.region == "us-east-1" for d in plan.datasets)
    assert [(d.name, d.kind, d.shards) for d in plan.datasets] == [
        ("user_profiles", "records", 4096),
        ("video_metadata", "records", 4096),
        ("videos", "objects", 4096),
    ]
    sizes = size_plan(plan)  # would fail (no credentials, no network) if it listed a bucket
    assert all(s.files is None for s in sizes)
    assert sum(s.bytes for s in sizes) == pytest.approx(1e15, rel=0.01)  # ~1 PB


def test_petabyte_estimate_prints_partitions_chunks_time_and_cost(tmp_path: Path) -> None:
    out10 = plan_estimate("--rate", "20MB/s", "--workers", "10", cwd=tmp_path)
    out40 = plan_estimate("--rate", "20MB/s", "--workers", "40", cwd=tmp_path)

    assert "per-worker rate given: 20 MB/s (--rate)" in out10
    r10, r40 = rows(out10), rows(out40)
    videos_chunks = math.ceil(10**15 / (64 * MiB))  # full 64 MiB parts of 1 PB: a floor
    assert 14_500_000 < videos_chunks < 16_800_000
    # dataset, kind, size from, source, shards = Dagster partitions, chunks, stored, PUTs
    assert r10["user_profiles"][4:6] == ["4,096", "4,096"]  # ~44 MB a shard: one chunk each
    assert r10["video_metadata"][4:6] == ["4,096", "8,192"]  # ~73 MB a shard: two chunks
    assert r10["videos"][4:6] == ["4,096", f"{videos_chunks:,}"]
    assert all(r10[name][2] == "expected_size" for name in ("user_profiles", "videos"))
    assert r10["Dagster partitions (shards), all datasets"][1] == "12,288"
    chunks = 4096 + 8192 + videos_chunks
    assert r10["chunks, all datasets"][1] == f"{chunks:,}"
    assert r10["state store rows"][1] == f"{chunks:,} chunks, 12,288 shards"

    # 64 MiB stored chunks above the 32 MiB threshold: begin, four 16 MiB parts, complete.
    puts = (4096 + 4097) + (8192 + 4097) + (videos_chunks * 6 + 4097)
    assert r10["PUT-class requests"][1] == f"{puts:,} (${puts / 1000 * PUT_USD_PER_1000:,.2f})"
    gets = (4096 + 4097) + (8192 + 4097) + (videos_chunks + 4097)
    verify = f"{gets:,} (${gets / 1000 * GET_USD_PER_1000:,.2f})"
    assert r10["a full verify's GET requests"][1] == verify
    stored = int(180e9 / 4) + int(300e9 / 4) + 10**15
    storage = f"${stored / 1e9 * STORAGE_USD_PER_GB_MONTH:,.2f}"
    assert r10["storage a month"][1] == storage
    assert "assumed s3 list prices" in out10

    # 20 MB/s a worker: 10 and 40 workers stay under the 5 GB/s link, so time scales 4x
    # but for the listing, which one worker does before any has a task.
    source = 180e9 + 300e9 + 1e15
    t10 = hours(r10["expected time at 10 workers"][1])
    t40 = hours(r40["expected time at 40 workers"][1])
    listing = hours(r10["listing the source, once a generation (8 threads)"][1])
    assert listing == hours(r40["listing the source, once a generation (8 threads)"][1]) > 0
    assert t10 == pytest.approx(source / (10 * 20e6) / 3600 + listing, abs=0.1)
    assert t10 / t40 == pytest.approx(4.0, rel=1e-3)
    assert "bound by the workers' rate" in r10["expected time at 10 workers"][1]
    assert "bound by the workers' rate" in r40["expected time at 40 workers"][1]
    assert hours(r10["time over the link: stored / link"][1]) == pytest.approx(
        stored / 5e9 / 3600, abs=0.1
    )

    doc = estimate_json("--rate", "20MB/s", "--workers", "10", cwd=tmp_path)
    by_name = {d["dataset"]: d for d in doc["datasets"]}
    assert {n: (d["shards"], d["chunks"]) for n, d in by_name.items()} == {
        "user_profiles": (4096, 4096),
        "video_metadata": (4096, 8192),
        "videos": (4096, videos_chunks),
    }
    assert all(d["size_from"] == "expected_size" and d["files"] is None for d in by_name.values())
    totals = doc["totals"]
    assert totals["dagster_partitions"] == 12_288 == totals["state_shard_rows"]
    assert totals["chunks"] == chunks == totals["state_chunk_rows"]
    assert totals["put_requests"] == puts == sum(d["put_requests"] for d in by_name.values())
    assert totals["verify_get_requests"] == gets
    assert totals["stored_bytes"] == stored
    assert doc["rates"] == {
        "records_bytes_per_s": 20_000_000,
        "objects_bytes_per_s": 20_000_000,
        "measured": False,
        "measured_seconds": None,
        "cpus": doc["rates"]["cpus"],
        "load": 0.0,
        "sample_bytes": 0,
        "routing_bytes_per_s": round(20e6 / 0.7),  # assumed: routing is 70 % of a records run
        "routing_measured": False,
        "sync_seconds": None,
    }
    assert doc["time"]["bound"] == "workers"
    assert doc["time"]["hours"] == pytest.approx(t10, abs=0.05)
    assert doc["time"]["link_bytes_per_s"] == 5_000_000_000 and doc["time"]["link_from_plan"]
    cost = doc["cost"]
    assert cost["requests_usd"] == pytest.approx(puts / 1000 * PUT_USD_PER_1000)
    assert cost["storage_usd_month"] == pytest.approx(stored / 1e9 * STORAGE_USD_PER_GB_MONTH)
    assert cost["verify_usd"] == pytest.approx(gets / 1000 * GET_USD_PER_1000)
    doc40 = estimate_json("--rate", "20MB/s", "--workers", "40", cwd=tmp_path)
    assert doc["time"]["worker_seconds"] / doc40["time"]["worker_seconds"] == pytest.approx(4.0)
    assert doc["time"]["seconds"] == pytest.approx(
        doc["time"]["listing_seconds"] + doc["time"]["worker_seconds"]
    )
    assert not list(tmp_path.iterdir())  # nothing written where it ran


def test_petabyte_estimate_shows_listing_routing_and_syncs(tmp_path: Path) -> None:
    out = plan_estimate("--rate", "20MB/s", "--workers", "10", cwd=tmp_path)
    doc = estimate_json("--rate", "20MB/s", "--workers", "10", cwd=tmp_path)
    table = rows(out)
    stages = doc["stages"]
    assert stages["workers"] == 10 and stages["sync_change"] == 0.01
    # Routing: the records' bytes over 10 workers at the assumed routing rate.
    routing_h = (180e9 + 300e9) / (10 * 20e6 / 0.7) / 3600
    assert stages["routing_hours"] == pytest.approx(routing_h)
    assert hours(table["routing at 10 workers: records / routing rate"][1]) == pytest.approx(
        routing_h, abs=0.01
    )
    # Listing: one worker's 8 threads at an assumed 5,000 names a second, files assumed one a
    # 64 MiB (no expected_files in the plan).
    names = sum(math.ceil(b / (64 * MiB)) for b in (180e9, 300e9, 1e15))
    assert stages["listing_hours"] == pytest.approx(names / (8 * 5000) / 3600)
    listing = table["listing the source, once a generation (8 threads)"][1]
    assert listing.endswith(f", {names:,} names")
    assert doc["time"]["listing_seconds"] == pytest.approx(stages["listing_hours"] * 3600)

    sync_s, idle_s, freeze_s = (
        stages[k] for k in ("sync_seconds", "no_change_sync_seconds", "freeze_seconds")
    )
    assert 0 < idle_s < sync_s < freeze_s < doc["time"]["seconds"] / 10
    assert freeze_s == pytest.approx(sync_s + doc["time"]["listing_seconds"])  # + the gate's
    assert table["a sync at 1 % change at 10 workers"][1].startswith("~")
    assert table["a sync with no change at 10 workers"][1].startswith("~")
    assert table["final sync inside the freeze"][1].startswith("~")
    assert "then the cutover gate, which lists the source once more" in " ".join(out.split())
    # 1 % of 1 PB of videos: 10 TB read and sent at 10 x 20 MB/s.
    videos = next(d for d in stages["datasets"] if d["dataset"] == "videos")
    assert videos["sync"]["changed_bytes"] == 10**13
    assert videos["sync"]["encoding"] == pytest.approx(1e13 / (10 * 20e6))
    assert videos["no_change_sync"]["changed_bytes"] == 0
    assert videos["no_change_sync"]["encoding"] == 0
    # Each figure says whether it was measured, given or assumed.
    how = {f["name"]: f["how"] for f in stages["figures"]}
    assert how["records, end to end, one worker"] == "given"
    assert how["routing records, one worker"] == "assumed"
    assert how["listing videos, one thread"] == "assumed"
    assert how["files of videos"] == "assumed"
    assert table["routing records, one worker"][2] == "assumed"
    assert "a sync at 1 % change at 10 workers, part by part" in out


def test_sync_change_and_expected_files_come_from_the_plan(tmp_path: Path) -> None:
    text = PETABYTE.read_text(encoding="utf-8")
    text = text.replace("  bandwidth: 5GB/s", "  bandwidth: 5GB/s\n  sync_change: 0.002").replace(
        "    expected_size: 1000TB", "    expected_size: 1000TB\n    expected_files: 4000000"
    )
    (tmp_path / "petabyte.yaml").write_text(text, encoding="utf-8")
    done = run_cli(
        "plan", "petabyte.yaml", "--estimate", "--rate", "20MB/s", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    stages = json.loads(done.stdout)["stages"]
    assert stages["sync_change"] == 0.002
    videos = next(d for d in stages["datasets"] if d["dataset"] == "videos")
    assert videos["files"] == 4_000_000
    assert videos["sync"]["changed_bytes"] == 2 * 10**12
    files = next(f for f in stages["figures"] if f["name"] == "files of videos")
    assert (files["value"], files["how"]) == (4_000_000, "given")


def test_the_link_bounds_time_however_many_workers(tmp_path: Path) -> None:
    fast = estimate_json("--rate", "500MB/s", "--workers", "64", cwd=tmp_path)
    faster = estimate_json("--rate", "500MB/s", "--workers", "128", cwd=tmp_path)
    assert fast["time"]["bound"] == faster["time"]["bound"] == "link"
    assert fast["time"]["seconds"] == faster["time"]["seconds"]
    assert fast["time"]["seconds"] == fast["time"]["listing_seconds"] + fast["time"]["link_seconds"]
    assert fast["time"]["worker_seconds"] == pytest.approx(2 * faster["time"]["worker_seconds"])
    # 500 MB/s is above the 400 MiB/s upload cap: the cap, not the rate, sets the workers' time.
    assert fast["time"]["cap_seconds"] > fast["time"]["rate_seconds"]
    filled = fast["time"]["workers_to_fill_link"]
    assert 1 <= filled < 64
    text = plan_estimate("--rate", "500MB/s", "--workers", "64", cwd=tmp_path)
    cell = rows(text)["expected time at 64 workers"][1]
    assert "bound by the link (more workers will not help)" in cell
    assert rows(text)["workers that keep the link full"][1] == f"{filled:,}"


def test_a_cloud_dataset_without_expected_size_is_a_usage_error(tmp_path: Path) -> None:
    text = PETABYTE.read_text(encoding="utf-8")
    line = "    expected_size: 300GB           # ~850 M rows of ~350 B\n"
    assert line in text
    (tmp_path / "petabyte.yaml").write_text(text.replace(line, ""), encoding="utf-8")
    done = run_cli("plan", "petabyte.yaml", "--estimate", "--rate", "100MB/s", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert message.startswith("migrator: error: ")
    assert "petabyte.yaml: datasets[1].expected_size: " in message
    assert "'video_metadata'" in message and "s3" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["petabyte.yaml"]


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--workers", "8"], "--workers is an option of --estimate"),
        (["--rate", "1MB/s"], "--rate is an option of --estimate"),
        (["--estimate", "--rate", "fast"], "--rate"),
        (["--estimate", "--rate", "0MB/s"], "--rate"),
        (["--estimate", "--workers", "0"], "--workers"),
    ],
)
def test_bad_estimate_options_are_usage_errors(tmp_path: Path, args: list[str], hint: str) -> None:
    done = run_cli("plan", PETABYTE, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert hint in done.stderr


# --- local plans: listed where there is no expected_size; a rate measured here --------------


def test_local_sources_are_listed_unless_they_state_a_size(tmp_path: Path) -> None:
    write_profiles(tmp_path / "data/profiles", 300)
    write_objects(tmp_path / "data/videos", [0, 5000, 70_000])
    # Videos state a size and their folder need not exist; profiles are listed.
    shutil.rmtree(tmp_path / "data/videos")
    videos = VIDEOS.replace("part_size: 64KiB}", "part_size: 64KiB, expected_size: 1MiB}")
    write_plan(tmp_path, datasets=PROFILES + videos)
    done = run_cli("plan", "plan.yaml", "--estimate", "--rate", "50MB/s", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    by_name = {d["dataset"]: d for d in doc["datasets"]}
    assert by_name["profiles"]["size_from"] == "listing" and by_name["profiles"]["files"] == 3
    assert by_name["videos"]["size_from"] == "expected_size"
    assert by_name["videos"]["chunks"] == 16  # 1 MiB in 64 KiB parts
    assert doc["time"]["link_bytes_per_s"] is None  # a local destination, no link named
    assert doc["totals"]["dagster_partitions"] == 4 + 3

    write_plan(tmp_path, datasets=PROFILES + VIDEOS)  # no expected_size, no folder
    done = run_cli("plan", "plan.yaml", "--estimate", "--rate", "50MB/s", cwd=tmp_path)
    assert done.returncode == 2
    assert "datasets[1].source.path" in done.stderr and "expected_size" in done.stderr


def test_without_a_rate_one_worker_is_measured_on_this_machine(tmp_path: Path) -> None:
    write_profiles(tmp_path / "data/profiles", 300)
    write_objects(tmp_path / "data/videos", [0, 5000, 70_000])
    write_plan(tmp_path, datasets=PROFILES + VIDEOS, chunk_size="1MiB", memory_budget="64MiB")
    done = run_cli("plan", "plan.yaml", "--estimate", "--workers", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "measuring one worker on this machine" in done.stderr
    line = next(s for s in done.stdout.splitlines() if s.startswith("per-worker rate measured"))
    match = re.search(
        r"a ([\d.]+) s measurement: records ([\d,]+) MB/s .* objects ([\d,]+) MB/s", line
    )
    assert match, line
    seconds, records, objects = (float(g.replace(",", "")) for g in match.groups())
    assert 0 < seconds < 60
    assert records > 0 and objects > 0
    table = rows(done.stdout)
    assert table["per-worker rate"][1].endswith("(measured)")
    # Routing is timed in that run, and a sync that finds nothing changed after it.
    assert re.search(r"routing [\d,]+ MB/s; a records sync with nothing changed [\d.]+ s", line)
    assert table["routing records, one worker"][2] == "measured"
    assert table["a sync's fixed cost, a dataset"][2] == "measured"
    assert table["rewriting a shard's inventory, one worker"][2] == "assumed"
    assert table["link to the destination"][1] == "none (a local destination)"
    assert "bound by the workers' rate" in table["expected time at 4 workers"][1]
    # Measured in a temp dir: nothing of the measurement is left beside the plan.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "kek.key", "plan.yaml"]


def test_measured_rates_scale_time_by_kind() -> None:
    plan = load_plan(PETABYTE)
    sizes = size_plan(plan)
    rates = WorkerRates(records=10e6, objects=100e6, measured_seconds=5.0, cpus=2)
    est = estimate_run(plan, sizes, 1000, rates)
    expected = (180e9 + 300e9) / (1000 * 10e6) + 1e15 / (1000 * 100e6)
    assert est.rate_seconds == pytest.approx(expected)
    doc = est.as_dict()
    assert doc["rates"]["measured"] and doc["rates"]["measured_seconds"] == 5.0
    assert doc["time"]["bound"] == "link"  # 1000 workers at 100 MB/s: far above 5 GB/s

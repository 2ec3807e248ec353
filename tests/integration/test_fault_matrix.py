"""Faults through the whole CLI: destination × fault × operation, and seeded soaks.

A fault proxy sits between migrator and moto's S3 and KMS, or Azurite. Every case holds one
contract. Either the command succeeds: `verify` through a clean connection then reads every
chunk `status` counts, and `restore` gives the source back byte for byte. Or it stops with
exit 3 and one line naming the object or operation (no traceback, no secret), the state store
then counts no chunk the destination lacks or holds differently, and running again finishes.
A read never passes bad data: a cut or short answer is read again, or the object is reported.

The CLI runs in this process (`migrator.cli.main`: arguments to exit code, its own error
handling): a subprocess would cost a second of imports a command, and there are hundreds here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple
from unittest.mock import patch
from urllib.parse import unquote

import pytest
import xxhash
from botocore.exceptions import BotoCoreError, ClientError

from migrator.cli import main
from migrator.demo.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite
from migrator.demo.motoserver import MotoServer, kms_client, s3_client
from migrator.errors import (
    EXIT_INTEGRITY,
    EXIT_RUNTIME,
    EXIT_VERIFY_FAILED,
    MissingObjectError,
)
from migrator.keys.keyring import load_keyring
from migrator.plan.model import Plan, load_plan
from migrator.stores.base import ObjectStore
from migrator.wiring import open_key_provider, open_state, open_store
from tests.faultproxy import SLOW_DOWN_XML, FaultProxy, Match, ResetAt, SeenRequest
from tests.planfiles import (
    AWS_TEST_ENV,
    files_below,
    restored_records,
    write_objects,
    write_plan,
    write_profiles,
)

pytestmark = pytest.mark.integration

Kind = Literal["s3", "azure"]
KINDS: tuple[Kind, ...] = ("s3", "azure")
# The videos' largest object is one stored chunk over the threshold: three parts, the S3
# floor lowered for the test (small_parts).
SIZES = "multipart_threshold: 256KiB, upload_part_size: 256KiB"
VIDEO_SIZES = [600_000, 40_000, 70_000]
DATASETS = """\
  - {name: profiles, kind: records, format: jsonl, source: {kind: local, path: data/profiles},
     key: user_id, shards: 2}
  - {name: videos, kind: objects, source: {kind: local, path: data/videos}, shards: 2,
     part_size: 1MiB}
"""
NAMES = ("profiles", "videos")
LOCAL_KEYS = "{provider: local, kek_file: kek.key}"
ENV = {**AWS_TEST_ENV, "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "160"}


# --- running the CLI ----------------------------------------------------------------------


class Result(NamedTuple):
    code: int
    out: str
    err: str


def cli(root: Path, env: dict[str, str], *args: str | Path) -> Result:
    """`migrator ARGS` in root, as a user would type it."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = None
    with (
        contextlib.chdir(root),
        patch.dict(os.environ, {**ENV, **env}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main([str(arg) for arg in args])
        except SystemExit as exc:
            code = exc.code
    return Result(int(code or 0), out.getvalue(), err.getvalue())


# --- destinations and sites ---------------------------------------------------------------


@dataclass
class Destination:
    """A fresh bucket or container, reached through `proxy` (plan.yaml) or straight (clean.yaml);
    for S3, the KMS key too."""

    kind: Kind
    name: str
    proxy: FaultProxy
    faulty: str  # the plan's destination through the proxy
    clean: str  # the same destination, straight to the server
    env: dict[str, str]
    keys: str = LOCAL_KEYS
    clean_keys: str = LOCAL_KEYS
    secrets: tuple[str, ...] = ()
    kms_key: str | None = None


def s3_destination(moto: MotoServer, proxy: FaultProxy, kms_key: str) -> Destination:
    bucket = f"fm-{uuid.uuid4().hex}"
    s3_client(moto.endpoint_url).create_bucket(Bucket=bucket)
    dest = "{{kind: s3, bucket: {b}, prefix: t/, region: us-east-1, endpoint_url: {u}, {s}}}"
    keys = (
        "{{provider: aws-kms, key_id: '{k}', signing_key_id: '{g}', region: us-east-1,"
        " endpoint_url: {u}}}"
    )
    signing = kms_client(moto.endpoint_url).create_key(
        Description="fault matrix signing key", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"
    )["KeyMetadata"]["Arn"]
    return Destination(
        "s3",
        bucket,
        proxy,
        dest.format(b=bucket, u=proxy.url, s=SIZES),
        dest.format(b=bucket, u=moto.endpoint_url, s=SIZES),
        {},
        keys.format(k=kms_key, g=signing, u=proxy.url),
        keys.format(k=kms_key, g=signing, u=moto.endpoint_url),
        (AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],),
        kms_key,
    )


def azure_destination(azurite: Azurite, proxy: FaultProxy) -> Destination:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import ContainerClient

    name = f"fm-{uuid.uuid4().hex}"
    with ContainerClient.from_connection_string(
        azurite.connection_string, name, transport=RequestsTransport(use_env_settings=False)
    ) as client:
        client.create_container()
    faulty_url = f"{proxy.url}/{ACCOUNT_NAME}"
    dest = (
        "{{kind: azure, bucket: {c}, prefix: t/, account_url: {u},"
        " connection_string_env: {e}, {s}}}"
    )
    return Destination(
        "azure",
        name,
        proxy,
        dest.format(c=name, u=faulty_url, e="AZ_FAULTY", s=SIZES),
        dest.format(c=name, u=azurite.blob_url, e="AZ_CLEAN", s=SIZES),
        {
            "AZ_FAULTY": azurite.connection_string.replace(azurite.blob_url, faulty_url),
            "AZ_CLEAN": azurite.connection_string,
        },
        secrets=(ACCOUNT_KEY,),
    )


@dataclass
class Site:
    """A plan's folder: data/ (shared, read only), plan.yaml through the proxy, clean.yaml not."""

    root: Path
    dest: Destination
    outs: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def create(cls, root: Path, data: Path, dest: Destination) -> Site:
        root.mkdir(parents=True)
        (root / "data").symlink_to(data, target_is_directory=True)
        texts = {}
        for plan, destination, keys in (
            ("clean.yaml", dest.clean, dest.clean_keys),
            ("plan.yaml", dest.faulty, dest.keys),
        ):
            written = write_plan(
                root,
                datasets=DATASETS,
                destination=destination,
                memory_budget="8MiB",
                extra="upload_concurrency: 2",
            )
            texts[plan] = written.read_text().replace(LOCAL_KEYS, keys)
        for plan, text in texts.items():
            (root / plan).write_text(text)
        return cls(root, dest)

    def cli(self, *args: str | Path) -> Result:
        return cli(self.root, self.dest.env, *args)

    @contextlib.contextmanager
    def clean_store(self) -> Iterator[tuple[Plan, ObjectStore]]:
        with patch.dict(os.environ, {**ENV, **self.dest.env}):
            plan = load_plan(self.root / "clean.yaml", check_sources=False)
            yield plan, open_store(plan)

    def largest_object(self, prefix: str) -> str:
        with self.clean_store() as (_, store):
            return max(store.list(prefix), key=lambda info: info.size).key

    # --- the contract -----------------------------------------------------------------

    def assert_one_error_line(
        self, result: Result, codes: tuple[int, ...] = (EXIT_RUNTIME,)
    ) -> str:
        """The command failed with one line naming what failed: no traceback, no secret."""
        assert result.code in codes, result.err
        assert "Traceback" not in result.err
        lines = [line for line in result.err.splitlines() if line.strip()]
        # Above it, only the progress bars' last state (stderr is no terminal here).
        flagged = [line for line in lines if "migrator" in line or "rror" in line]
        assert flagged == lines[-1:], result.err
        if self.dest.kind == "s3":
            store = rf"s3://{self.dest.name}/t/\S+"
        else:
            store = rf"azure://127\.0\.0\.1:\d+/{ACCOUNT_NAME}/{self.dest.name}/t/\S+"
        named = (
            rf"{store}: [^:]+ failed: .+",  # the object and the operation
            rf"aws-kms (signing key \S+|{self.dest.kms_key}): \w+ .+",  # the key, the operation
            r"[\w/.-]+\.(mgc|json): .+",  # restore: the object that could not be read
        )
        assert any(re.fullmatch(f"migrator: error: {n}", lines[-1]) for n in named), lines[-1]
        kek = (self.root / "kek.key").read_bytes().hex()
        for secret in (*self.dest.secrets, kek, "Signature=", "sig=", "AccountKey="):
            assert secret not in result.err + result.out
        return lines[-1]

    def assert_counted_chunks_are_stored(self) -> tuple[int, int]:
        """Every chunk the state store counts as committed, in every generation, is at the
        destination with the bytes it recorded, and `status` counts the latest generation's
        just so; returns the chunks and stored bytes of all generations."""
        done = self.cli("status", "clean.yaml", "--json")
        assert done.code == 0, done.err
        status = {ds["name"]: ds for ds in json.loads(done.out)["datasets"]}
        chunks = stored = 0
        with self.clean_store() as (plan, store), open_state(plan) as state:
            provider = open_key_provider(plan)
            for ds in plan.datasets:
                # names and digests in the state store are sealed under the dataset's key;
                # a run stopped before it made one left no rows to read
                with contextlib.suppress(MissingObjectError):
                    keyring = load_keyring(store, provider, plan.name, ds.name)
                    state.bind_dataset_key(ds.name, keyring.first)
                doc = status[ds.name]
                for row in state.generations(ds.name):
                    counted = sized = 0
                    for progress in state.shard_progress(ds.name, row.generation):
                        if progress.manifest_key is not None:
                            assert store.head(progress.manifest_key) is not None
                        for chunk in state.shard_chunks(ds.name, row.generation, progress.shard):
                            data = store.get(chunk.object_key)
                            assert len(data) == chunk.stored_size, chunk.object_key
                            digest = xxhash.xxh3_128_hexdigest(data)
                            assert digest == chunk.stored_xxh3, chunk.object_key
                            counted += 1
                            sized += chunk.stored_size
                    if row.generation == doc["generation"]:
                        assert (doc["chunks"], doc["stored_bytes"]) == (counted, sized)
                    chunks += counted
                    stored += sized
        return chunks, stored

    def check_verify(self, done: Result) -> str:
        """`migrator verify --json` passed, reading every chunk status counts, or it named the
        objects it could not read well (never a pass on bad data)."""
        if done.code not in (0, EXIT_VERIFY_FAILED):
            self.assert_one_error_line(done)
            return "stopped"
        doc = json.loads(done.out)
        if done.code == EXIT_VERIFY_FAILED:
            assert doc["problems"] and all(p["object_key"] for p in doc["problems"]), doc
            return "reported: " + "; ".join(
                f"{p['object_key']} {p['error']}: {p['message'][-60:]}" for p in doc["problems"]
            )
        chunks, stored = self.assert_counted_chunks_are_stored()
        assert doc["problems"] == []
        assert doc["chunks_checked"] == doc["chunks_listed"] == chunks > 0
        assert doc["bytes_checked"] == stored
        return "retried"

    def assert_verifies(self) -> None:
        assert self.check_verify(self.cli("verify", "clean.yaml", "--json")) == "retried"

    def restore(self, name: str, plan: str = "clean.yaml") -> str:
        """Restores a dataset: the source byte for byte, or one line naming what failed."""
        out = self.root / f"restored-{next(self.outs)}" / name
        done = self.cli("restore", plan, "--dataset", name, "--out", out)
        if done.code != 0:
            self.assert_one_error_line(done, (EXIT_RUNTIME, EXIT_INTEGRITY))
            return "stopped"
        data = self.root / "data" / name
        if name == "videos":
            assert files_below(out) == files_below(data)
        else:
            assert restored_records(out) == restored_records(data)
        return "retried"

    def assert_complete(self) -> None:
        self.assert_verifies()
        for name in NAMES:
            assert self.restore(name) == "retried"

    def run_to_the_end(self, ops: dict[str, Match], most: int = 6) -> dict[str, str]:
        """`migrator run` through the proxy until it succeeds; after each stop, the state store
        must agree with the destination. Returns how each operation's faults ended."""
        outcomes: dict[str, str] = {}
        for _ in range(most):
            before = len(self.dest.proxy.injected)
            done = self.cli("run", "plan.yaml")
            hit = [
                op
                for _, seen in self.dest.proxy.injected[before:]
                for op, match in ops.items()
                if match(seen)
            ]
            line = "" if done.code == 0 else self.assert_one_error_line(done)
            for op in hit:
                outcomes[op] = "stopped, resumed" if OP_NAMES[op] in line else "retried"
            if done.code == 0:
                return outcomes
            self.assert_counted_chunks_are_stored()
        raise AssertionError(f"still failing after {most} runs")


# --- faults and operations ----------------------------------------------------------------

Fault = str  # reset-head | reset | reset-response | 500 | 503 | cut | short | denied | delay
RESET_AT: dict[Fault, ResetAt] = {
    "reset-head": "head",
    "reset": "request",
    "reset-response": "response",
}
KMS_ERRORS = {
    "500": (500, "KMSInternalException"),
    "503": (400, "ThrottlingException"),  # what KMS throttling looks like
    "denied": (400, "AccessDeniedException"),
}
AZURE_ERRORS = {"500": "InternalError", "503": "ServerBusy", "denied": "AuthorizationFailure"}


def error_xml(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>"
    ).encode()


S3_ERRORS = {
    "500": error_xml("InternalError", "We encountered an internal error. Please try again."),
    "503": SLOW_DOWN_XML,
    "denied": error_xml("AccessDenied", "Access Denied"),
}


def install(proxy: FaultProxy, fault: Fault, match: Match, *, n: int = 1) -> None:
    """`fault` on the next n requests `match` accepts: S3, Azure and KMS errors each in their
    own service's words (KMS requests are told apart by their X-Amz-Target)."""
    if fault in RESET_AT:
        proxy.reset_next(n, match=match, at=RESET_AT[fault])
    elif fault == "cut":
        proxy.cut_response_next(n, match=match)
    elif fault == "short":
        proxy.short_response_next(n, match=match)
    elif fault == "delay":
        proxy.delay(0.2, match=match, n=n)
    else:
        status = 403 if fault == "denied" else int(fault)
        kms_status, kms_code = KMS_ERRORS[fault]
        azure_code = AZURE_ERRORS[fault]
        proxy.fail_next(
            n,
            status=kms_status,
            body=json.dumps({"__type": kms_code, "message": "from the fault proxy"}).encode(),
            content_type="application/x-amz-json-1.1",
            match=lambda r: is_kms(r) and match(r),
        )
        proxy.fail_next(
            n,
            status=status,
            body=error_xml(azure_code, f"{azure_code} from the fault proxy"),
            headers={"x-ms-error-code": azure_code},
            match=lambda r: is_azure(r) and match(r),
        )
        proxy.fail_next(
            n, status=status, body=S3_ERRORS[fault], match=lambda r: is_s3(r) and match(r)
        )


def is_kms(request: SeenRequest) -> bool:
    return "x-amz-target" in request.headers


def is_azure(request: SeenRequest) -> bool:
    return request.path.startswith(f"/{ACCOUNT_NAME}/")


def is_s3(request: SeenRequest) -> bool:
    return not is_kms(request) and not is_azure(request)


def is_put_of_records_chunk(request: SeenRequest) -> bool:
    return request.method == "PUT" and request.query == "" and "/r/" in request.path


def is_part(request: SeenRequest) -> bool:
    return request.method == "PUT" and (
        "partNumber=" in request.query or "comp=block&" in request.query
    )


def is_complete(request: SeenRequest) -> bool:
    s3 = request.method == "POST" and request.query.startswith("uploadId=")
    return s3 or (request.method == "PUT" and request.query == "comp=blocklist")


def is_listing(request: SeenRequest) -> bool:
    return request.method == "GET" and (
        "list-type=" in request.query or "comp=list" in request.query
    )


def gets(key: str) -> Match:
    """A GET of one stored object, by its key below the prefix."""
    return lambda request: (
        request.method == "GET" and request.path.endswith(f"/t/{key}") and request.query == ""
    )


def kms_call(operation: str) -> Match:
    target = f"TrentService.{operation}"
    return lambda request: request.headers.get("x-amz-target") == target


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def small_parts() -> Iterator[None]:
    """Parts under S3's 5 MiB floor on both sides (moto and the CLI run in this process), as
    the small_s3_parts fixture does for one test."""
    import moto.s3.models

    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1024)
        patcher.setattr("migrator.stores.s3.MIN_PART_SIZE", 1024)
        yield


@pytest.fixture(scope="module")
def source_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fault-matrix") / "data"
    write_profiles(data / "profiles", 600)
    write_objects(data / "videos", VIDEO_SIZES)
    return data


@pytest.fixture(scope="module")
def kms_key(moto_server: MotoServer) -> str:
    import boto3

    kms = boto3.session.Session(region_name="us-east-1").client(
        "kms", endpoint_url=moto_server.endpoint_url
    )
    return str(kms.create_key(Description="fault matrix KEK")["KeyMetadata"]["Arn"])


SiteFactory = Callable[[Kind], Site]


@contextlib.contextmanager
def sites_in(
    root: Path, data: Path, moto: MotoServer, kms_key: str, request: pytest.FixtureRequest
) -> Iterator[SiteFactory]:
    proxies: list[FaultProxy] = []
    numbers = itertools.count()

    def new(kind: Kind) -> Site:
        if kind == "s3":
            proxy = FaultProxy.for_url(moto.endpoint_url).start()
            proxies.append(proxy)
            dest = s3_destination(moto, proxy, kms_key)
        else:
            azurite: Azurite = request.getfixturevalue("azurite")
            proxy = FaultProxy("127.0.0.1", azurite.port).start()
            proxies.append(proxy)
            dest = azure_destination(azurite, proxy)
        return Site.create(root / f"site-{next(numbers)}", data, dest)

    try:
        yield new
    finally:
        for proxy in proxies:
            proxy.stop()
    assert [proxy.errors for proxy in proxies if proxy.errors] == [], "the fault proxy failed"


@pytest.fixture
def new_site(
    tmp_path: Path,
    source_data: Path,
    moto_server: MotoServer,
    kms_key: str,
    request: pytest.FixtureRequest,
) -> Iterator[SiteFactory]:
    with sites_in(tmp_path, source_data, moto_server, kms_key, request) as factory:
        yield factory


@pytest.fixture(scope="module")
def migrated(
    tmp_path_factory: pytest.TempPathFactory,
    source_data: Path,
    moto_server: MotoServer,
    kms_key: str,
    request: pytest.FixtureRequest,
) -> Iterator[dict[Kind, Site]]:
    """A finished migration into each destination, to read back through faults."""
    root = tmp_path_factory.mktemp("migrated")
    with sites_in(root, source_data, moto_server, kms_key, request) as factory:
        sites = {kind: factory(kind) for kind in KINDS}
        for site in sites.values():
            done = site.cli("run", "plan.yaml")
            assert done.code == 0, done.err
        yield sites


# --- writes: `migrator run` -----------------------------------------------------------------

WRITE_OPS: dict[Kind, dict[str, Match]] = {
    "s3": {
        "kms GenerateDataKey": kms_call("GenerateDataKey"),
        "put": is_put_of_records_chunk,
        "part": is_part,
        "complete": is_complete,
    },
    "azure": {"put": is_put_of_records_chunk, "block": is_part, "commit": is_complete},
}
# How the line of a failed run names each operation.
OP_NAMES = {
    "kms GenerateDataKey": "GenerateDataKey",
    "put": "put failed",
    "part": "upload part",
    "block": "stage block",
    "complete": "complete upload",
    "commit": "commit block list",
}
WRITE_FAULTS = ("reset-head", "reset", "reset-response", "500", "503", "cut", "short", "denied")
# A transient fault is retried, but for these: the run stops with one line and the next run
# finishes. (A KMS answer cut short, which botocore parses as an empty success, is asked again.)
STOPS: set[tuple[str, str, str]] = set()


@pytest.mark.parametrize(
    ("kind", "fault"),
    [
        (kind, fault)
        for kind in KINDS
        for fault in WRITE_FAULTS
        if (kind, fault) != ("azure", "short")
    ],
)
def test_faults_while_migrating(new_site: SiteFactory, kind: Kind, fault: Fault) -> None:
    """One fault on the first request of each write operation; a short answer only where
    the answer has a body (S3's complete, KMS)."""
    site = new_site(kind)
    ops = {
        op: match
        for op, match in WRITE_OPS[kind].items()
        if fault != "short" or (kind, op) in {("s3", "complete"), ("s3", "kms GenerateDataKey")}
    }
    for match in ops.values():
        install(site.dest.proxy, fault, match)

    outcomes = site.run_to_the_end(ops)

    site.assert_complete()
    expected = {
        op: "stopped, resumed" if fault == "denied" or (kind, fault, op) in STOPS else "retried"
        for op in ops
    }
    assert outcomes == expected


# --- reads: `migrator verify` and `migrator restore` ----------------------------------------

READ_FAULTS = ("reset", "cut", "short")
READ_OPS = (
    "verify: GET",
    "verify: list",
    "restore: GET",
    "verify: kms Decrypt",
    "restore: kms Decrypt",
)
# A transient fault is read again, but for these: verify names the object it could not read
# (exit 1), or restore stops with one line. Never a pass on bad data.
NOT_RETRIED = {
    ("s3", "short", "verify: GET"): "reported: videos/",  # TruncatedError, by the chunk header
    ("s3", "short", "restore: GET"): "stopped",
    ("azure", "short", "verify: list"): "reported",
}


@pytest.mark.parametrize(
    ("kind", "operation", "fault"),
    [
        (kind, operation, fault)
        for kind in KINDS
        for operation in READ_OPS
        if kind == "s3" or "kms" not in operation  # the Azure site's KEK is a local file
        for fault in READ_FAULTS
    ],
)
def test_faults_while_reading_back(
    migrated: dict[Kind, Site], kind: Kind, operation: str, fault: Fault
) -> None:
    site = migrated[kind]
    proxy = site.dest.proxy
    command, _, request = operation.partition(": ")
    big = site.largest_object("videos/")  # three parts: S3 keeps no whole-object checksum
    match = {"GET": gets(big), "list": is_listing}.get(request) or kms_call("Decrypt")
    before = len(proxy.injected)
    install(proxy, fault, match)

    if command == "verify":
        outcome = site.check_verify(site.cli("verify", "plan.yaml", "--json"))
    else:
        outcome = site.restore("profiles" if "kms" in request else "videos", "plan.yaml")

    assert len(proxy.injected) - before == 1
    proxy.clear_faults()
    assert outcome.startswith(NOT_RETRIED.get((kind, fault, operation), "retried")), outcome


# --- latency --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_latency_on_every_request(new_site: SiteFactory, kind: Kind) -> None:
    """Every request held 20 ms, under the engine's own timeouts: run, verify and restore
    through the slow link all succeed."""
    site = new_site(kind)
    site.dest.proxy.delay(0.02)

    assert site.run_to_the_end({}, most=1) == {}
    assert site.check_verify(site.cli("verify", "plan.yaml", "--json")) == "retried"
    for name in NAMES:
        assert site.restore(name, "plan.yaml") == "retried"
    delayed = Counter(fault for fault, _ in site.dest.proxy.injected)
    assert delayed == {"delay": len(site.dest.proxy.requests)}
    site.dest.proxy.clear_faults()
    site.assert_complete()


# --- seeded soaks ---------------------------------------------------------------------------


class Schedule:
    """Seeded faults keyed by what a request is, not by when it comes, so one seed is one
    schedule whatever order threads send in: the k-th time the proxy sees a request (method,
    path, query without upload ids, KMS operation), a hash of (seed, request, k) picks its
    fault or none. A request is faulted on at most its first two attempts, so every retry
    series ends; a write may be denied on its first (the run stops; the next one goes on)."""

    FAULTS: tuple[Fault, ...] = (
        "reset-head",
        "reset",
        "reset-response",
        "500",
        "503",
        "cut",
        "delay",
    )

    def __init__(self, seed: int, *, rate: float = 0.12, deny_rate: float = 0.05) -> None:
        self.seed = seed
        self.rate = rate
        self.deny_rate = deny_rate
        self.attempts: Counter[str] = Counter()
        self.pending: dict[str, Fault | None] = {}

    def install(self, proxy: FaultProxy) -> None:
        forever = 1_000_000_000
        # Rules that act on a request's head are asked first, once a request: the decision.
        proxy.reset_next(forever, match=self.decide_at_head, at="head")
        for fault in (*self.FAULTS[1:], "short", "denied"):
            install(proxy, fault, self.wants(fault), n=forever)

    def decide_at_head(self, request: SeenRequest) -> bool:
        fault = self.decide(request)
        self.pending[self.identity(request)] = fault
        return fault == "reset-head"

    def wants(self, fault: Fault) -> Match:
        return lambda request: self.pending.get(self.identity(request)) == fault

    def decide(self, request: SeenRequest) -> Fault | None:
        ident = self.identity(request)
        self.attempts[ident] += 1
        attempt = self.attempts[ident]
        writes = request.method in ("PUT", "POST") and not is_kms(request)
        if attempt == 1 and writes and self.draw(ident, "deny") < self.deny_rate:
            return "denied"
        if attempt > 2 or self.draw(ident, attempt) >= self.rate:
            return None
        faults = self.FAULTS + (("short",) if request.method == "GET" else ())
        return faults[int(self.draw(ident, attempt, "fault") * len(faults))]

    def draw(self, *what: object) -> float:
        digest = hashlib.blake2b(repr((self.seed, *what)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    @staticmethod
    def identity(request: SeenRequest) -> str:
        """What stays the same from one test run to the next: no bucket or container name,
        upload id, or object name tag (keyed by the run's fresh data key)."""
        path = re.sub(rf"^/(?:{ACCOUNT_NAME}/)?fm-[0-9a-f]+", "", request.path)
        path = re.sub(r"/o/[0-9a-f]{32}/", "/o/*/", path)
        query = re.sub(r"uploadId=[^&]*", "uploadId=*", request.query)
        query = re.sub(  # Azure block ids: "<upload id>-<part number>", base64
            r"blockid=([^&]*)",
            lambda m: "part=" + base64.b64decode(unquote(m[1])).decode().rpartition("-")[2],
            query,
        )
        target = request.headers.get("x-amz-target", "")
        return f"{request.method} {path}?{query} {target}"


# Fixed: each seed is one schedule. These give stops (denied writes) and most fault kinds on
# each destination at a small cost in backoff.
SEEDS: dict[Kind, tuple[int, ...]] = {"s3": (5, 8), "azure": (5, 6)}


@pytest.mark.parametrize(("kind", "seed"), [(kind, seed) for kind in KINDS for seed in SEEDS[kind]])
def test_seeded_soak(new_site: SiteFactory, kind: Kind, seed: int) -> None:
    """Mixed faults over whole runs (each stop checked, then run again), a verify and the
    restores; then a clean verify and restore."""
    site = new_site(kind)
    proxy = site.dest.proxy
    Schedule(seed).install(proxy)

    site.run_to_the_end({}, most=8)
    site.check_verify(site.cli("verify", "plan.yaml", "--json"))  # or names what it misread
    for name in NAMES:
        site.restore(name, "plan.yaml")  # the source, or one line naming what it misread
    proxy.clear_faults()
    site.assert_complete()

    faults = Counter(fault for fault, _ in proxy.injected)
    assert sum(faults.values()) >= 5


# --- the proxy's own faults used above ------------------------------------------------------


def test_proxy_resets_before_the_body_or_after_the_answer_and_shortens_answers(
    moto_server: MotoServer,
) -> None:
    import boto3
    from botocore.config import Config

    bucket = f"fm-{uuid.uuid4().hex}"
    direct = s3_client(moto_server.endpoint_url)
    direct.create_bucket(Bucket=bucket)
    body = bytes(range(256)) * 40
    with FaultProxy.for_url(moto_server.endpoint_url) as proxy:
        client = boto3.session.Session(region_name="us-east-1").client(
            "s3",
            endpoint_url=proxy.url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        # Before the body: the client waiting on 100 Continue is reset, nothing is stored.
        proxy.reset_next(at="head")
        with pytest.raises(BotoCoreError):
            client.put_object(Bucket=bucket, Key="early", Body=io.BytesIO(body))
        # After the answer: the object is stored, the client hears nothing.
        proxy.reset_next(at="response")
        with pytest.raises(BotoCoreError):
            client.put_object(Bucket=bucket, Key="late", Body=body)
        # A short answer, framed for its length: nothing at the HTTP level is wrong.
        proxy.short_response_next()
        got = client.get_object(Bucket=bucket, Key="late")
        assert got["Body"].read() == body[: len(body) // 2]
        assert got["ContentLength"] == len(body) // 2
        proxy.fail_next(status=503, headers={"x-ms-error-code": "ServerBusy"})
        with pytest.raises(ClientError) as failed:
            client.head_object(Bucket=bucket, Key="late")
        headers = failed.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-ms-error-code"] == "ServerBusy"

        kinds = [kind for kind, _ in proxy.injected]
        assert kinds == ["reset-head", "reset-response", "short", "fail"]
        early = proxy.requests[0]
        assert (early.method, early.path, early.headers["expect"]) == (
            "PUT",
            f"/{bucket}/early",
            "100-continue",
        )
        assert early.body_size == 0
        assert proxy.errors == []
    assert [item["Key"] for item in direct.list_objects_v2(Bucket=bucket)["Contents"]] == ["late"]
    assert direct.get_object(Bucket=bucket, Key="late")["Body"].read() == body

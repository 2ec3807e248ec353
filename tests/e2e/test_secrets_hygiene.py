"""No key material in anything a run shows or keeps: CLI output, logs, errors, reprs, the
state store, the destination (where data keys exist only wrapped)."""

from __future__ import annotations

import base64
import logging
import random
from pathlib import Path

import pytest

from migrator.keys.keyring import load_data_key
from migrator.keys.local import LocalKeyProvider
from migrator.plan.model import load_plan
from migrator.read.verify import Verifier
from migrator.stores.local import LocalStore
from migrator.wiring import open_state
from tests.e2e.test_sync_generations import DATASETS, LiveSource
from tests.planfiles import run_cli, write_plan


def forms(secret: bytes) -> list[bytes]:
    """The ways a 32-byte secret could leak: raw, hex (either case), base64 (std, url-safe)."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
    ]


def assert_clean(where: str, blob: bytes, secrets: dict[str, bytes]) -> None:
    for name, secret in secrets.items():
        for form in forms(secret):
            assert form not in blob, f"{name} appears in {where}"


def test_a_full_run_shows_and_keeps_no_key_material(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    live = LiveSource(tmp_path, random.Random(71))
    live.seed(profiles=200, rows=100, videos=4)
    live.write()
    write_plan(tmp_path, datasets=DATASETS)
    plan = load_plan(tmp_path / "plan.yaml")
    shown = b""
    for args in (
        ("run", "plan.yaml"),
        ("status", "plan.yaml", "--json"),
        ("verify", "plan.yaml", "--json"),
        ("cutover", "plan.yaml", "--json"),
        ("restore", "plan.yaml", "--dataset", "profiles", "--out", "out"),
        ("--debug", "run", "plan.yaml"),
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        shown += (done.stdout + done.stderr).encode()

    store = LocalStore(tmp_path / "dest" / "t")
    assert plan.keys.kek_file is not None
    provider = LocalKeyProvider(plan.keys.kek_file)
    secrets = {"the KEK": plan.keys.kek_file.read_bytes().strip()}
    for ds in plan.datasets:
        key = load_data_key(store, provider, plan.name, ds.name)
        secrets[f"{ds.name}'s data key"] = key.secret
        assert key.secret.hex() not in repr(key) + str(key)

    # A tampered chunk: the errors and the debug traceback name objects, never keys.
    victim = next(
        p for p in (tmp_path / "dest" / "t" / "profiles").rglob("*.mgc") if "/r/" in str(p)
    )
    data = bytearray(victim.read_bytes())
    data[-3] ^= 1
    victim.write_bytes(bytes(data))
    for args in (
        ("verify", "plan.yaml"),
        ("--debug", "restore", "plan.yaml", "--dataset", "profiles", "--out", "bad"),
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode != 0
        shown += (done.stdout + done.stderr).encode()
    with open_state(plan) as state:
        report = Verifier(plan, store, provider, state).verify()
    assert report.problems
    shown += repr(report).encode() + repr(plan).encode()
    shown += "\n".join(r.getMessage() for r in caplog.records).encode()

    assert_clean("CLI output, logs, errors and reprs", shown, secrets)
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert_clean(f"the state store ({path.name})", path.read_bytes(), secrets)
    for path in (tmp_path / "dest").rglob("*"):
        if path.is_file():
            assert_clean(f"the destination ({path.name})", path.read_bytes(), secrets)


def test_a_plan_refuses_inline_secrets(tmp_path: Path) -> None:
    """Credentials are named by environment variable or file, never written into a plan."""
    write_plan(
        tmp_path,
        datasets=DATASETS,
        destination="{kind: azure, account_url: 'http://127.0.0.1:1/a', container: c,"
        " account_key: c2VjcmV0}",
    )
    done = run_cli("plan", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "account_key" in done.stderr and "c2VjcmV0" not in done.stderr

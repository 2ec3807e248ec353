"""A table of hostile plans (tests/hostile_plans.py), one case each, through the real CLI.

Each case runs every command that reads a plan, in this process (`migrator.cli.main`), and
each must exit 2 naming the case's field, while nothing is opened, written or connected to:
the wiring that opens stores, key services and state stores records any call, the sockets
refuse every address but loopback, and the state folder, the destination folder and restore's
output stay absent. The same checks accept the real GovCloud and Azure Government endpoints.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import migrator.residency.fips
import migrator.wiring
from migrator.cli import main
from migrator.errors import PlanError
from migrator.plan.model import load_plan
from migrator.residency import ResidencyError, check_residency, enforce_residency
from migrator.state import db as state_db
from tests.hostile_plans import SECRET, Case, accepted_cases, hostile_cases

# Every command that reads a plan, with the arguments it needs (OUT: a folder to stay absent).
COMMANDS: dict[str, list[str]] = {
    "plan": ["plan", "PLAN"],
    "run": ["run", "PLAN"],
    "run --dry-run": ["run", "PLAN", "--dry-run"],
    "status": ["status", "PLAN"],
    "verify": ["verify", "PLAN"],
    "audit": ["audit", "PLAN"],
    "restore": ["restore", "PLAN", "--dataset", "d", "--out", "OUT"],
    "deadletters": ["deadletters", "PLAN", "--dataset", "d", "--out", "OUT"],
    "compact": ["compact", "PLAN"],
    "cutover": ["cutover", "PLAN"],
    "state rebuild": ["state", "rebuild", "PLAN"],
    "keys rotate": ["keys", "rotate", "PLAN"],
    "keys audit-key": ["keys", "audit-key", "PLAN", "--out", "OUT/audit-key.json"],
}
HOSTILE = hostile_cases()
ACCEPTED = accepted_cases()


class Opened(AssertionError):
    """Raised by the guarded wiring: a refused plan reached a store, key or state store."""


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """No store, key provider or state store opens, and no socket leaves loopback; each try
    is recorded (and fails the command, so the test sees it either way)."""
    opened: list[str] = []

    def refuse(what: str) -> Any:
        def opener(*args: object, **kwargs: object) -> Any:
            opened.append(what)
            raise Opened(f"{what} was opened for a refused plan")

        return opener

    monkeypatch.setattr(migrator.wiring, "open_destination", refuse("destination"))
    monkeypatch.setattr(migrator.wiring, "open_kek", refuse("key provider"))
    monkeypatch.setattr(state_db.StateDB, "__init__", refuse("state store"))
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1", None):
            opened.append(f"DNS {host}")
            raise Opened(f"a connection to {host} was attempted")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    yield opened


def write_case(root: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> Path:
    (root / "data").mkdir(parents=True)
    plan = root / "plan.yaml"
    plan.write_text(json.dumps(case.plan(), ensure_ascii=False))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MIGRATOR_STATE_URL", "PGHOST", "PGHOSTADDR", "PGSERVICE", "AZ_CONN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    for library in ("cryptography_fips", "interpreter_fips"):
        monkeypatch.setattr(migrator.residency.fips, library, lambda: case.fips_backend)
    return plan


def run_command(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    captured = capsys.readouterr()
    return int(exit_.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.id)
def test_a_hostile_plan_is_refused_by_every_command(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    guarded: list[str],
) -> None:
    plan = write_case(tmp_path, case, monkeypatch)
    out = tmp_path / "out"
    for command, template in COMMANDS.items():
        if command == "run --dry-run" and case.dry_run_allows:
            continue  # see test_a_dry_run_needs_no_connection_string
        args = [str(plan) if a == "PLAN" else a.replace("OUT", str(out)) for a in template]
        code, text = run_command(args, capsys)
        assert code == 2, f"{command}: exit {code}\n{text}"
        assert f"{case.field}:" in text, f"{command}: the message names no {case.field}\n{text}"
        assert "refused" in text or case.by_model, f"{command}: {text}"
        assert SECRET not in text and "Traceback" not in text, f"{command}: {text}"
    assert guarded == [], f"opened for a refused plan: {guarded}"
    assert not (tmp_path / "state").exists() and not (tmp_path / "dest").exists()
    assert not out.exists()


@pytest.mark.parametrize("case", [c for c in HOSTILE if not c.by_model], ids=lambda c: c.id)
def test_each_hostile_plan_is_refused_for_its_own_reason(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case's field is the only one refused: the rest of its plan is a good plan."""
    plan = load_plan(write_case(tmp_path, case, monkeypatch))
    refused = {check.field for check in check_residency(plan) if not check.allowed}
    assert refused == {case.field, *case.also}
    with pytest.raises(ResidencyError) as err:
        enforce_residency(plan)
    assert err.value.field == case.field and err.value.exit_code == 2


@pytest.mark.parametrize("case", [c for c in HOSTILE if c.by_model], ids=lambda c: c.id)
def test_some_tricks_never_pass_the_plan_model(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PlanError) as err:
        load_plan(write_case(tmp_path, case, monkeypatch))
    assert err.value.field == case.field


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_real_sovereign_endpoints_are_accepted(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    guarded: list[str],
) -> None:
    plan = write_case(tmp_path, case, monkeypatch)
    checks = check_residency(load_plan(plan))
    assert [c for c in checks if not c.allowed] == []
    code, text = run_command(["plan", str(plan)], capsys)
    assert code == 0, text
    assert SECRET not in text
    if case.top.get("residency"):
        assert "residency checks" in text and "REFUSED" not in text
    assert guarded == []


def test_a_dry_run_needs_no_connection_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rehearsal stands Azurite in for the account and never reads the real secret, so an
    unset variable is reported, not refused; every other command refuses it."""
    case = next(c for c in HOSTILE if c.dry_run_allows)
    plan = load_plan(write_case(tmp_path, case, monkeypatch))
    row = next(c for c in enforce_residency(plan, rehearsal=True) if c.field == case.field)
    assert row.allowed and "the real run checks it" in row.reason
    with pytest.raises(ResidencyError):
        enforce_residency(plan)


def test_a_refusal_shows_no_userinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL's userinfo may be a password: a refusal shows the URL without it."""
    case = next(c for c in HOSTILE if c.id == "s3-userinfo-password")
    code, text = run_command(["plan", str(write_case(tmp_path, case, monkeypatch))], capsys)
    assert code == 2 and "pass@" not in text and "***@s3-fips" in text


def test_the_environment_is_read_when_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same plan passes, then is refused once AWS_ENDPOINT_URL_S3 points elsewhere."""
    case = next(c for c in ACCEPTED if c.id == "govcloud-fips")
    plan = str(write_case(tmp_path, case, monkeypatch))
    assert run_command(["plan", plan], capsys)[0] == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://evil.example")
    code, text = run_command(["plan", plan], capsys)
    assert code == 2 and "env AWS_ENDPOINT_URL_S3:" in text
    assert os.environ["AWS_ENDPOINT_URL_S3"] == "https://evil.example"

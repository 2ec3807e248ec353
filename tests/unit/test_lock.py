"""The lock files: one resolution, hash-pinned, that every install takes and pyproject allows.

These tests read the repository only; none asks a package index what it serves today, so a new
release of anything cannot turn them red.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
DEPLOY_LOCK = ROOT / "deploy" / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
ENV = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7"}


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str
    hashes: frozenset[str]

    def applies(self) -> bool:
        """Whether this pin is installed on a Linux CPython 3.11 (the tests' and the image's)."""
        if not self.marker:
            return True
        return Requirement(f"x ; {self.marker}").marker.evaluate(ENV)  # type: ignore[union-attr]


def _pins(path: Path) -> list[Pin]:
    text = path.read_text(encoding="utf-8")
    assert "\t" not in text
    pins: list[Pin] = []
    for entry in re.split(r"\n(?=[^\s#])", text):
        lines = [line.strip() for line in entry.splitlines() if not line.startswith("#")]
        if not lines:
            continue
        head = lines[0].rstrip("\\").strip()
        requirement, _, marker = head.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s=;]+)", requirement.strip())
        assert match, f"{path.name}: {head!r} is not pinned to one exact version"
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
        assert hashes, f"{path.name}: {match[1]} has no sha256 hash"
        pins.append(Pin(canonicalize_name(match[1]), match[2], marker.strip(), hashes))
    return pins


def _applicable(path: Path) -> dict[str, Pin]:
    out: dict[str, Pin] = {}
    for pin in _pins(path):
        if pin.applies():
            assert pin.name not in out, f"{path.name}: {pin.name} pinned twice for Linux 3.11"
            out[pin.name] = pin
    return out


def _pyproject_requirements() -> list[tuple[str, Requirement]]:
    project = PYPROJECT["project"]
    reqs = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, items in project["optional-dependencies"].items():
        reqs += [(f"optional-dependencies.{extra}", Requirement(r)) for r in items]
    reqs += [
        ("build-system.requires", Requirement(r)) for r in PYPROJECT["build-system"]["requires"]
    ]
    return [(where, r) for where, r in reqs if canonicalize_name(r.name) != "migrator"]


def test_every_line_of_both_locks_is_one_exact_version_with_hashes() -> None:
    assert len(_pins(LOCK)) > 50
    assert len(_pins(DEPLOY_LOCK)) > 30
    for path in (LOCK, DEPLOY_LOCK):
        text = path.read_text(encoding="utf-8")
        # An index named in a lock would pin where to download from, not what; pip's own
        # configuration says where.
        assert not re.search(r"^\s*(--index-url|--extra-index-url|-i |-e |-f )", text, re.M)
        assert "://" not in text


@pytest.mark.parametrize(("where", "requirement"), _pyproject_requirements(), ids=str)
def test_the_lock_satisfies_pyproject(where: str, requirement: Requirement) -> None:
    if requirement.marker and not requirement.marker.evaluate(ENV):
        return
    pins = _applicable(LOCK)
    name = canonicalize_name(requirement.name)
    assert name in pins, f"pyproject {where}: {requirement} is not in requirements.lock"
    assert requirement.specifier.contains(Version(pins[name].version), prereleases=True), (
        f"pyproject {where}: {requirement} does not allow the locked {pins[name].version}: "
        "run `make lock`"
    )


def test_the_image_lock_is_the_tested_lock_cut_down() -> None:
    tested = {(p.name, p.version): p.hashes for p in _pins(LOCK)}
    for pin in _pins(DEPLOY_LOCK):
        assert (pin.name, pin.version) in tested, f"image pins {pin.name}=={pin.version}, untested"
        assert pin.hashes <= tested[(pin.name, pin.version)], pin.name
    image = _applicable(DEPLOY_LOCK)
    for name in [
        "dagster",
        "dagster-k8s",
        "dagster-postgres",
        "psycopg2-binary",
        "boto3",
        "azure-storage-blob",
        "azure-keyvault-keys",
        "azure-identity",
        "cryptography",
        "setuptools",
    ]:
        assert name in image, name
    # psycopg2 is the image's PostgreSQL driver (the state store's and Dagster's); psycopg 3,
    # SQLAlchemy 2.1's default for postgresql://, is not installed, so every URL names +psycopg2.
    assert not {"psycopg", "psycopg-binary", "psycopg-c"} & image.keys()
    # Test tools stay out of the image.
    assert not {"pytest", "moto", "mypy", "ruff", "hypothesis"} & image.keys()


def test_dagster_and_its_libraries_move_together() -> None:
    pins = _applicable(LOCK)
    major, minor, patch = pins["dagster"].version.split(".")
    assert major == "1"
    for library in ["dagster-postgres", "dagster-k8s"]:
        assert pins[library].version == f"0.{int(minor) + 16}.{patch}", library


def test_this_environment_is_the_lock() -> None:
    """What the tests run against is the lock (a profiler added by hand may sit beside it)."""
    pins = _applicable(LOCK)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    assert set(pins) <= set(installed), set(pins) - set(installed)
    drift = {
        n: (installed[n], pin.version) for n, pin in pins.items() if installed[n] != pin.version
    }
    assert drift == {}


def test_every_install_takes_the_lock_with_hashes_only() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet --require-hashes --no-deps -r requirements.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    pip_lines = [line for line in makefile.splitlines() if "pip install" in line]
    assert all("--no-deps" in line for line in pip_lines), pip_lines
    assert "upgrade pip" not in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    pip_lines = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert pip_lines and all("--no-deps" in line for line in pip_lines), pip_lines
    assert "--require-hashes --no-deps -r deploy/requirements.lock" in dockerfile

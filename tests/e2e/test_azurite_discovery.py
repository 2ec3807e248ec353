"""An Azure dry run finds Azurite wherever npm installed it (MIGRATOR_AZURITE, the checkout's
node_modules, PATH, the working folder's node_modules), or says in one line how to install it:
never an internal error."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import migrator.demo.azurite as azurite_module
from migrator.demo.azurite import AZURITE_ENV, AzuriteUnavailable, azurite_binary
from migrator.errors import MigratorError


def fake_binary(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "azurite-blob"
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def installed_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """migrator as pip installs it: no source checkout above it, nothing on PATH."""
    monkeypatch.setattr(azurite_module, "project_root", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.delenv(AZURITE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_found_on_path_from_a_global_npm_install(
    installed_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = fake_binary(installed_package / "npm-global" / "bin")
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")
    assert azurite_binary() == binary


def test_found_in_the_working_folder_or_where_the_variable_says(
    installed_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = fake_binary(installed_package / "node_modules" / ".bin")
    assert azurite_binary().resolve() == here.resolve()
    named = fake_binary(installed_package / "elsewhere")
    monkeypatch.setenv(AZURITE_ENV, str(named))
    assert azurite_binary() == named


def test_not_installed_is_one_line_saying_how(installed_package: Path) -> None:
    with pytest.raises(AzuriteUnavailable) as raised:
        azurite_binary()
    assert isinstance(raised.value, MigratorError)  # the CLI's one line, not an internal error
    message = str(raised.value)
    assert "\n" not in message and "npm install -g azurite" in message and AZURITE_ENV in message

"""The unit tier starts no server and no subprocess: a test that needs one belongs in tests/e2e
or tests/integration, where its cost is expected."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


class _Forbidden(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _no_subprocess_or_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def no_popen(*args: Any, **kwargs: Any) -> Any:
        raise _Forbidden("a unit test started a subprocess; move it to tests/e2e")

    def no_connect(self: socket.socket, address: Any) -> Any:
        raise _Forbidden(f"a unit test connected to {address!r}; move it to tests/integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_popen)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    yield

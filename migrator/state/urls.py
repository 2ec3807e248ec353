"""Which state store a command opens, and how messages may name it: never with its password."""

from __future__ import annotations

import os
from pathlib import Path

STATE_URL_ENV = "MIGRATOR_STATE_URL"
_SECRET_PARAMS = frozenset({"password", "passfile", "sslpassword", "sslkey"})


def describe_url(url: str) -> str:
    """The URL as messages may show it: never a password (neither in the authority nor as a
    query parameter)."""
    from sqlalchemy.engine import make_url  # only where a URL is shown: SQLAlchemy is ~100 ms
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        query = {k: v for k, v in parsed.query.items() if k.lower() not in _SECRET_PARAMS}
        shown = parsed.set(password=None, query=query).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<state URL>"
    if "@" in (parsed.host or "") or (
        parsed.password is not None and str(parsed.password) in shown
    ):
        return "<state URL>"  # an unescaped separator in the password: show nothing of it
    return shown


def state_url_for(state_dir: Path, plan_url: str | None, default_file: str) -> str:
    """MIGRATOR_STATE_URL, else the plan's state_url, else SQLite in state_dir."""
    return os.environ.get(STATE_URL_ENV) or plan_url or f"sqlite:///{state_dir / default_file}"

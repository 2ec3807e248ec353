"""Where output goes: a rich console sized for pipes, and JSON as every `--json` prints it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click
import orjson

if TYPE_CHECKING:
    from rich.console import Console, RenderableType


def console(stderr: bool = False) -> Console:
    from rich.console import Console  # not for `--help` and usage errors

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = 160  # pipes and CI logs: wide enough that tables do not wrap
    return out


def echo_json(doc: Any, *, indent: bool = True) -> None:
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else None).decode())


def echo_lines(lines: Iterable[str]) -> None:
    """Plain lines, no markup: what scripts parse."""
    for line in lines:
        click.echo(line)


def show_report(doc: Any, parts: Iterable[RenderableType], as_json: bool) -> None:
    """A report as JSON or as tables."""
    if as_json:
        echo_json(doc)
        return
    out = console()
    for part in parts:
        out.print(part)

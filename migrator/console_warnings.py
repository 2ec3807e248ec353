"""Library warnings on the command line: what the `migrator` loggers warn about (an S3
look-alike lacking an operation, say) becomes the CLI's `migrator: warning: ...` line on stderr.
Other hosts (Dagster) see the same records through their own logging configuration."""

from __future__ import annotations

import logging

import click


class WarningLines(logging.Handler):
    """Writes to whatever stderr is when a record comes (a test runner may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"migrator: warning: {record.getMessage()}", err=True)
        except Exception:
            self.handleError(record)


def show_warnings_on_stderr() -> None:
    """Installs WarningLines on the `migrator` logger, once a process."""
    logger = logging.getLogger("migrator")
    if not any(isinstance(handler, WarningLines) for handler in logger.handlers):
        logger.addHandler(WarningLines(logging.WARNING))

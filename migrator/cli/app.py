"""The `migrator` command line. Errors are one line on stderr; --debug adds the traceback.

Exit codes: 0 ok · 1 verification found problems · 2 bad plan or usage · 3 runtime failure
(store, keys, state, source) · 4 integrity error while reading data back · 130 interrupted.

The commands live in one module per family; this one gathers them and turns what they raise
into those exit codes.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import click

from migrator.cli.audit_commands import audit_cmd, cutover_cmd
from migrator.cli.interrupts import EXIT_INTERRUPTED, INTERRUPTED, interrupts_end_the_command
from migrator.cli.keys_commands import crypto_cmd, keys_group
from migrator.cli.land_commands import land_cmd
from migrator.cli.plan_commands import plan_cmd
from migrator.cli.read_commands import deadletters_cmd, restore_cmd, verify_cmd
from migrator.cli.repair_commands import repair_cmd
from migrator.cli.run_commands import compact_cmd, demo_cmd, run_cmd
from migrator.cli.state_commands import state_group, status_cmd
from migrator.errors import EXIT_RUNTIME, EXIT_USAGE, MigratorError

_debug = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="migrator")
def cli(debug: bool) -> None:
    """Encrypted, resumable data migration into sovereign clouds."""
    from migrator.console_warnings import show_warnings_on_stderr

    global _debug
    _debug = debug
    show_warnings_on_stderr()


for command in (
    plan_cmd,
    run_cmd,
    compact_cmd,
    demo_cmd,
    status_cmd,
    state_group,
    verify_cmd,
    restore_cmd,
    deadletters_cmd,
    audit_cmd,
    cutover_cmd,
    land_cmd,
    repair_cmd,
    keys_group,
    crypto_cmd,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        with interrupts_end_the_command():
            cli.main(
                args=list(argv) if argv is not None else None,
                prog_name="migrator",
                standalone_mode=False,
            )
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(INTERRUPTED, err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(EXIT_USAGE) from None
    except MigratorError as exc:
        if _debug:
            traceback.print_exc()
        click.echo(f"migrator: error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    except SystemExit:
        raise
    except Exception as exc:
        if _debug:
            traceback.print_exc()
        click.echo(
            f"migrator: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            err=True,
        )
        raise SystemExit(EXIT_RUNTIME) from None
    raise SystemExit(0)


if __name__ == "__main__":
    main(sys.argv[1:])

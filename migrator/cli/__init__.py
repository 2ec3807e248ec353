"""The `migrator` command line.

`main` imports the commands only when called, so that importing a submodule (the renderers in
`migrator.cli.render`) does not load every command family.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from migrator.cli.app import main as run_main

    run_main(argv)

"""Progress while a run moves data: on stderr, so that stdout stays for results."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from migrator.sizes import format_size
from migrator.write.reports import ProgressSink


class RichProgress(ProgressSink):
    """Bytes, MB/s and ETA per dataset phase, on stderr so stdout stays for results."""

    def __init__(self, console: Console, *, limit: int | None = None) -> None:
        self._limit = f" [limit {format_size(limit)}/s]" if limit else ""
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total)
        label = f"{dataset}: {phase}" + (self._limit if phase == "encoding" else "")
        self._task = self._progress.add_task(label, total=max(total_bytes, 1))

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, nbytes)

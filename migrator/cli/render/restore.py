"""What `migrator restore` and `migrator deadletters` print: what came back from the
destination, and where it was written."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from migrator.sizes import format_size

if TYPE_CHECKING:
    from migrator.read.restore import RestoreReport
    from migrator.repository.dead_letters import DeadLetter, DeadLetterSet


def rollback_warning(message: str) -> str:
    return f"migrator: warning: {message} (restored anyway: --allow-rollback)"


def restored_line(report: RestoreReport, out_dir: str) -> str:
    return (
        f"restored {report.dataset}: {report.files} files, {report.records:,} records,"
        f" {format_size(report.bytes)} into {out_dir} (generation {report.generation})"
    )


def no_dead_letters_line(dataset: str, destination: str) -> str:
    return f"dataset {dataset} has no dead letters at {destination}"


def dead_letters_heading(dataset: str, generation: int, records: int) -> str:
    return f"dataset {dataset} generation {generation}: {records:,} records quarantined"


def dead_letters_written_line(heading: str, files: int, out_dir: str) -> str:
    files_written = f"{files} file" + ("" if files == 1 else "s")
    return f"{heading}, written byte for byte into {files_written} under {out_dir}"


def dead_letter_lines(heading: str, letters: Iterable[DeadLetter]) -> Iterator[str]:
    """Where each quarantined record is and why, then how many there are."""
    for d in letters:
        yield f"{d.file}:{d.line}: {d.reason}; the record starts at byte {d.offset}"
    yield heading


def dead_letters_json(info: DeadLetterSet, letters: Iterable[DeadLetter]) -> dict[str, Any]:
    """The records themselves travel base64-encoded: they are whatever bytes the source held."""
    return {
        "dataset": info.dataset,
        "generation": info.generation,
        "records": info.records,
        "csv_header": info.csv_header,
        "dead_letters": [
            {
                "file": d.file,
                "line": d.line,
                "offset": d.offset,
                "reason": d.reason,
                "data_base64": base64.b64encode(d.data).decode(),
            }
            for d in letters
        ],
    }

"""`migrator deadletters --out`: a dead-letter set written back as files, each source file's
quarantined records under its own name, ready to fix and feed back to the source."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from pathlib import Path

from migrator.errors import TamperedError
from migrator.repository.dead_letters import DeadLetter, DeadLetterSet
from migrator.repository.names import dead_letters_prefix


def check_file_name(name: str, object_key: str) -> Path:
    """A dead letter's file name as a path below the output folder, never outside it."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise TamperedError(f"unsafe file name {name!r} in dead letters", object_key=object_key)
    return Path(*parts)


def write_dead_letters(info: DeadLetterSet, letters: Iterator[DeadLetter], out: Path) -> int:
    """Each source file's dead letters into out/<its name>, byte for byte, each ended by a line
    feed (CSV: under the header row), ready to fix and feed back; returns the files written."""
    written: set[Path] = set()
    for name, same_file in groupby(letters, key=lambda letter: letter.file):
        target = out / check_file_name(name, dead_letters_prefix(info.dataset))
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab" if target in written else "wb") as fh:
            if target not in written and info.csv_header is not None:
                fh.write(info.csv_header.encode("utf-8", "surrogateescape") + b"\n")
            written.add(target)
            for letter in same_file:
                fh.write(letter.data + b"\n")
    return len(written)

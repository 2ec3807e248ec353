"""The JSON files an auditor keeps apart from the destination (an audit key, an exported head):
written sorted and indented so they diff and read well, and read back with one set of messages
for a file that is unreadable, not JSON, or of another format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from migrator.errors import UsageError


def exported_bytes(doc_format: str, version: int, fields: dict[str, Any]) -> bytes:
    """The file: its format and version beside `fields`, keys sorted."""
    doc = {"format": doc_format, "version": version, **fields}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def file_error(path: Path, message: str) -> UsageError:
    """Every complaint about an exported file names the file first."""
    return UsageError(f"{path}: {message}")


def read_exported(path: Path, kind: str, doc_format: str) -> dict[str, Any]:
    """The file's JSON object once its `format` is `doc_format`; `kind` names it in messages
    ("head file": "cannot read the head file", "not a head file")."""
    article = "an" if kind[:1] in "aeiou" else "a"
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise file_error(path, f"cannot read the {kind} ({exc.strerror})") from None
    except orjson.JSONDecodeError:
        raise file_error(path, f"not {article} {kind} (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != doc_format:
        raise file_error(path, f"not {article} {kind} (format is not {doc_format!r})")
    return doc

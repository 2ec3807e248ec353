"""What routing needs of a records dataset, typed so readers need no checks of their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from migrator.errors import MigratorError

__all__ = ["NotRecordsDatasetError", "RecordsSettings"]


class NotRecordsDatasetError(MigratorError):
    """Records settings were asked of an objects dataset: a caller's mistake, not the plan's."""


@dataclass(frozen=True)
class RecordsSettings:
    """A records dataset's framing and keying; the plan model guarantees format and key."""

    format: Literal["jsonl", "csv"]
    key: str
    csv_delimiter: str
    on_bad_record: Literal["fail", "quarantine"]
    # The dataset's own limit; None: Plan.max_record_size(dataset) works out the default.
    max_record_size: int | None

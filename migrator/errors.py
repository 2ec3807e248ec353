"""Typed errors. Each names the file, field, object or shard it is about, and maps to an exit code.

Exit codes (documented in the README):
  0 ok · 1 verification found bad objects · 2 bad plan or usage · 3 runtime failure
  (store, keys, state) · 4 integrity/format error while reading data back.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTEGRITY = 4


class MigratorError(Exception):
    """Base of every error the CLI turns into one clear line on stderr."""

    exit_code = EXIT_RUNTIME


class PlanError(MigratorError):
    """A migration plan that cannot be used; names the plan file and the field."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + message)


class UsageError(MigratorError):
    exit_code = EXIT_USAGE


class StoreError(MigratorError):
    """A destination or source store failed; names the object key."""


class KeyProviderError(MigratorError):
    """A key provider could not generate, wrap or unwrap a key."""


class StateError(MigratorError):
    """The checkpoint store is unusable or disagrees with the destination."""


class SourceError(MigratorError):
    """A source file or record cannot be read; names file and line where known."""


class BadRecordError(SourceError):
    """A source record routing cannot use (malformed, no key, ...): its file, line and reason,
    and, where routing found it, the byte offset of the record in its file."""

    def __init__(self, path: str, line: int, reason: str, offset: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        self.offset = offset
        hint = (
            ""
            if offset is None
            else f"; the record starts at byte {offset}. Fix it and run again to resume, or set"
            " the dataset's on_bad_record: quarantine"
        )
        super().__init__(f"{path}:{line}: {reason}{hint}")

    def __reduce__(self) -> tuple[type[BadRecordError], tuple[str, int, str, int | None]]:
        # Raised in routing worker processes: pickled back with every field.
        return (type(self), (self.path, self.line, self.reason, self.offset))


# --- format errors: reading back a stored chunk or manifest -----------------------------


class FormatError(MigratorError):
    """Base of the distinct ways a stored chunk or manifest can be bad."""

    exit_code = EXIT_INTEGRITY

    def __init__(self, message: str, *, object_key: str | None = None) -> None:
        self.object_key = object_key
        super().__init__(f"{object_key}: {message}" if object_key else message)


class TamperedError(FormatError):
    """Bytes were changed: bad magic, header checksum, commitment or AEAD tag."""


class TruncatedError(FormatError):
    """A chunk is shorter than its header says, or a shard lacks chunks it once had."""


class WrongKeyError(FormatError):
    """The chunk or wrapped key was sealed under another key."""


class UnknownVersionError(FormatError):
    """A format version this build does not know."""


class MisplacedChunkError(FormatError):
    """A valid chunk found where another belongs: swapped between shards, datasets, positions."""


class MissingObjectError(FormatError):
    """An object listed in a manifest is absent from the store."""


class DigestMismatchError(FormatError):
    """Decrypted data does not match the digest recorded when it was read from the source."""


class UnexpectedObjectError(FormatError):
    """An object under a shard's prefix that its manifest does not list."""

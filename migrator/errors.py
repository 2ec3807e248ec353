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

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later: a store, key service or state store that
        failed may recover; a bad plan, an integrity error or a bad source record never will."""
        return self.exit_code == EXIT_RUNTIME


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


class UnsupportedOperationError(StoreError):
    """The store's server does not offer an optional operation (an S3 look-alike answering
    ListParts with 501 NotImplemented): names the store and the operation. `newly_found` is
    True for the refusal the server itself gave a store, False when the store answered from
    what it remembered, so that callers say once what they do instead."""

    def __init__(self, message: str, *, store: str, operation: str, newly_found: bool) -> None:
        self.store = store
        self.operation = operation
        self.newly_found = newly_found
        super().__init__(message)


class KeyProviderError(MigratorError):
    """A key provider could not generate, wrap or unwrap a key."""


class StateError(MigratorError):
    """The checkpoint store is unusable or disagrees with the destination."""


class LandingError(MigratorError):
    """A landing target refused or failed a generation: names the target, dataset, shard,
    generation and, where one is at fault, the record's key (never the record)."""


class SourceError(MigratorError):
    """A source file or record cannot be read; names file and line where known."""


class SourceChangedError(SourceError):
    """A source file or object changed between its listing and its reading."""


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

    @property
    def retryable(self) -> bool:
        return False  # the same bytes fail the same way until the file is fixed

    def __reduce__(self) -> tuple[type[BadRecordError], tuple[str, int, str, int | None]]:
        # Raised in routing worker processes: pickled back with every field.
        return (type(self), (self.path, self.line, self.reason, self.offset))


class RecordTooLargeError(SourceError):
    """A source record longer than the dataset's max_record_size: its file, the line and byte
    offset where it starts. Never quarantined: holding it is what the limit prevents."""

    def __init__(
        self, path: str, line: int, offset: int, size: int, limit: int, complete: bool
    ) -> None:
        self.path = path
        self.line = line
        self.offset = offset
        self.size = size
        self.limit = limit
        self.complete = complete
        found = f"is {size:,} bytes" if complete else f"runs past {size:,} bytes without ending"
        super().__init__(
            f"{path}:{line}: the record starting at byte {offset:,} {found}, more than the"
            f" dataset's max_record_size ({limit:,} bytes). A record ends at a LF, CRLF or CR"
            " (in CSV, one outside quoted fields); fix the file, or raise max_record_size (and"
            " memory_budget)"
        )

    @property
    def retryable(self) -> bool:
        return False  # the record is as long the next time

    def __reduce__(
        self,
    ) -> tuple[type[RecordTooLargeError], tuple[str, int, int, int, int, bool]]:
        # Raised in routing worker processes: pickled back with every field.
        fields = (self.path, self.line, self.offset, self.size, self.limit, self.complete)
        return (type(self), fields)


class UnclosedQuoteError(RecordTooLargeError):
    """A CSV record over max_record_size because a quoted field in it never closes: also the
    line and byte offset where that quote opened, so the stray `"` can be found."""

    def __init__(
        self,
        path: str,
        line: int,
        offset: int,
        size: int,
        limit: int,
        quote_line: int,
        quote_offset: int,
    ) -> None:
        super().__init__(path, line, offset, size, limit, False)
        self.quote_line = quote_line
        self.quote_offset = quote_offset
        SourceError.__init__(
            self,
            f"{path}:{line}: the record starting at byte {offset:,} runs past {size:,} bytes"
            f" without ending, more than the dataset's max_record_size ({limit:,} bytes): its"
            f" quoted field opened at line {quote_line}, byte {quote_offset:,} never closes (a"
            ' `"` at the start of a field opens a quoted field, which runs to the next `"` that'
            " is not doubled); fix the file",
        )

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[UnclosedQuoteError], tuple[str, int, int, int, int, int, int]]:
        fields = (
            self.path,
            self.line,
            self.offset,
            self.size,
            self.limit,
            self.quote_line,
            self.quote_offset,
        )
        return (type(self), fields)


class UnrestorableNamesError(SourceError):
    """Object names a restore could not write back as the same paths: the first few, counted."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, names: list[str], count: int) -> None:
        self.names = names
        self.count = count
        super().__init__(message)


class RestoreIncompleteError(MigratorError):
    """A restore wrote fewer objects than the manifests list: names those it did not write."""

    def __init__(self, message: str, *, written: int, names: list[str], count: int) -> None:
        self.written = written
        self.names = names
        self.count = count
        super().__init__(message)


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


class RollbackError(FormatError):
    """The destination is older than a generation known to be committed (by the state store,
    or a head an auditor exported): its newest generation record, or its tail, was removed or
    put back to an earlier version. Names the dataset and the generation record's key."""


class UntrustedKeyError(FormatError):
    """A data key no signature of the plan's signing key vouches for: a keyring entry someone
    else wrapped (kms:Encrypt, a Key Vault public key), or a keyring unsigned or signed by
    another key. Refused, never sealed under; names the key object and the key id."""

    def __init__(
        self, message: str, *, object_key: str | None = None, key_id: str | None = None
    ) -> None:
        self.key_id = key_id
        super().__init__(message, object_key=object_key)

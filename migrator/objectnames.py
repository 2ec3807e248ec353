"""Object names a restore can write back as the same paths on a POSIX filesystem.

An objects dataset's names are checked when the source lists them, before any byte moves, and
again by restore before it writes one. A name is refused, never rewritten: a restored object
under another name is lost to whoever looks it up by its name. docs/FORMAT.md §5.5 gives the
rules and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from migrator.errors import SourceError, UnrestorableNamesError

MAX_NAME_BYTES = 1024  # S3's and Azure Blob's key limit; leaves 3,071 bytes of PATH_MAX to `--out`
MAX_COMPONENT_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, zfs and tmpfs
NAMED_AT_MOST = 20  # refused names a message spells out; the rest are counted
_SHOWN_CHARS = 120  # a name longer than this is cut in messages

# C0 controls, DEL and C1 controls (Unicode category Cc), and lone surrogates: os.listdir's
# stand-ins for bytes that are not UTF-8.
_UNWRITABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be restored as the same relative path on POSIX, or None if it can."""
    if not name:
        return "is empty"
    bad = None if name.isprintable() else _UNWRITABLE.search(name)  # the fast path first
    if bad is not None:
        char = bad.group()
        if "\ud800" <= char <= "\udfff":
            return "is not valid UTF-8"
        return f"holds the control character U+{ord(char):04X}"
    if name[0] == "/":
        return "starts with '/'"
    if name[-1] == "/":
        return "ends with '/' (a folder marker that holds data)"
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        return f"is {size:,} bytes long, over {MAX_NAME_BYTES:,}"
    if "//" in name:
        return "has an empty component ('//')"
    # The common name has no dot starting a component and fits one component: no split.
    if name[0] == "." or "/." in name:
        for part in name.split("/"):
            if part in (".", ".."):
                return f"has a {part!r} component"
    if size > MAX_COMPONENT_BYTES:
        longest = max(len(part.encode()) for part in name.split("/"))
        if longest > MAX_COMPONENT_BYTES:
            return (
                f"has a component of {longest} bytes, over the {MAX_COMPONENT_BYTES} a file"
                " name may hold"
            )
    return None


def shown(name: str) -> str:
    """A name for a message: quoted with escapes (control characters visible), long ones cut."""
    if len(name) <= _SHOWN_CHARS:
        return repr(name)
    return f"{name[: _SHOWN_CHARS - 20]!r}… ({len(name):,} characters)"


@dataclass
class Refusals:
    """Names refused and why: the first NAMED_AT_MOST kept for messages, every one counted."""

    named: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0

    def add(self, name: str, reason: str) -> None:
        self.count += 1
        if len(self.named) < NAMED_AT_MOST:
            self.named.append((name, reason))

    def __bool__(self) -> bool:
        return self.count > 0

    def describe(self) -> str:
        listed = "; ".join(f"{shown(name)} {reason}" for name, reason in self.named)
        more = self.count - len(self.named)
        return listed + (f"; and {more:,} more" if more else "")


def _in_utf16_order(previous: str, name: str) -> bool:
    """UTF-16 code unit order, as Azure Blob (Azurite) sorts; code point order is `<`."""
    unit = "utf-16-be"
    return previous.encode(unit, "surrogatepass") < name.encode(unit, "surrogatepass")


class ListingNameCheck:
    """Checks one listing, streamed in name order: each name alone, and every file that another
    name would need as a folder (`p` beside `p/child`).

    In any lexicographic order, the names between a file `f` and the names under `f/` all start
    with `f`; so the files that can still turn out to be folders are those that are prefixes of
    the current name, a stack no longer than the longest name.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.refused = Refusals()
        self._previous: str | None = None
        self._files: list[str] = []  # files that are prefixes of the last name, shortest first
        self._folders: set[str] = set()  # files already refused as folders of another name

    def accept(self, name: str) -> bool:
        """False if `name` is refused (recorded); a listing out of order is a SourceError."""
        previous = self._previous
        if previous is not None and not (previous < name or _in_utf16_order(previous, name)):
            raise SourceError(
                f"{self.where}: the listing is not in name order ({shown(name)} came after"
                f" {shown(previous)}), so names cannot be checked for file and folder conflicts"
            )
        self._previous = name
        problem = name_problem(name)
        if problem is not None:
            self.refused.add(name, problem)
            return False
        files = self._files
        while files and not name.startswith(files[-1]):
            files.pop()
        for file in files:
            if name[len(file)] == "/" and file not in self._folders:
                self._folders.add(file)
                self.refused.add(file, f"is a file, and the folder of {shown(name)}")
        files.append(name)
        return True

    def finish(self, what: str) -> None:
        """Raise UnrestorableNamesError naming every refused name, if there is one."""
        if not self.refused:
            return
        count = self.refused.count
        raise UnrestorableNamesError(
            f"{what} ({self.where}): {count:,} object name{'s' if count > 1 else ''} cannot be"
            " restored as the same path on a POSIX filesystem, so nothing was migrated; rename"
            " such names at the source or leave them out with the dataset's include patterns"
            f" (docs/FORMAT.md §5.5): {self.refused.describe()}",
            names=[name for name, _ in self.refused.named],
            count=count,
        )

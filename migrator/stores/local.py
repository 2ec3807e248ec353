"""`ObjectStore` on a local directory: one file per key, written atomically.

Layout under `root`:
  <key>                             the object's bytes, exactly as given
  .meta/<key>.json                  its metadata, renamed into place before the data
  .<name>.<writer>-<pid>-<rand>.tmp a write in progress, or one a killed process left; never
                                    listed. <writer> names the host, boot and process namespace
                                    of the process <pid> that wrote it.

Many processes, on one host or several, may share a folder. A write a killed process left is
removed by whoever next writes or deletes in its folder (and by `remove_unfinished_writes`):
on the writer's own host once its process is gone, elsewhere once the file has not changed
for `stale_after` seconds. A live writer's file is never removed before that.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import xxhash

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import Buffer, ObjectInfo

META_DIR = ".meta"
# Older releases named a temporary `.<name>.<uuid hex>.tmp`, without its writer.
_TEMP_NAME = re.compile(
    r"^\..+\.(?:(?P<writer>[0-9a-f]{12})-(?P<pid>[0-9]{1,10})-[0-9a-f]{16}|[0-9a-f]{32})\.tmp$"
)
# A write whose writer cannot be asked (another host, or an older release) is left this long
# after its last change: far beyond the seconds a put takes, even of a 2 GiB chunk.
STALE_AFTER_SECONDS = 3600.0


def _this_writer() -> str:
    """12 hex digits naming this host, boot and process namespace: where `pid` means one
    process. Two containers on one host differ by namespace, two boots by boot id."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return xxhash.xxh3_64_hexdigest("\0".join(parts).encode())[:12]


_WRITER = _this_writer()
# Temporaries this process is writing, by path: a sweep never takes them, whichever store
# object (several may share a folder in one process) made them.
_LIVE: set[str] = set()
_PUBLISHING: set[str] = set()  # sidecars in place whose data this process is still writing


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class LocalStore:
    def __init__(
        self, root: Path, *, fsync: bool = True, stale_after: float = STALE_AFTER_SECONDS
    ) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.stale_after = stale_after
        self._swept: set[Path] = set()  # folders this store has cleared of dead writes
        # Folders made durable: a put into one does not look for it again. A store only ever
        # adds folders; one removed behind its back is made again (_write_atomically).
        self._folders: set[Path] = set()
        self._making: dict[Path, threading.Event] = {}  # folders a thread is making durable
        self._sweep_lock = threading.Lock()

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        path = self._path(key)
        try:
            # Metadata first, so an object that is visible always has its metadata. A crash
            # between the two renames of an overwrite leaves the old bytes with the new
            # metadata; the object was never confirmed, so the engine redoes it.
            meta_bytes = json.dumps(dict(metadata or {}), sort_keys=True).encode()
            meta_path = self._meta_path(key)
            _PUBLISHING.add(str(meta_path))  # a sidecar ahead of its data, for a moment
            try:
                self._write_atomically(meta_path, meta_bytes)
                self._write_atomically(path, data)
            finally:
                _PUBLISHING.discard(str(meta_path))
        except OSError as exc:
            raise StoreError(f"{self.describe()}: {key}: put failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise MissingObjectError(f"not found in {self.describe()}", object_key=key) from exc
        except OSError as exc:
            raise StoreError(f"{self.describe()}: {key}: get failed: {exc}") from exc

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            status = path.stat()
            if not stat.S_ISREG(status.st_mode):
                return None
            metadata = self._read_metadata(key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.describe()}: {key}: head failed: {exc}") from exc
        return ObjectInfo(key=key, size=status.st_size, metadata=metadata)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Key and size only, like S3 listings; metadata comes from `head`."""
        try:
            yield from self._walk(self.root, "", prefix)
        except OSError as exc:
            raise StoreError(f"{self.describe()}: list {prefix!r} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._sweep_once(path.parent)
        try:
            # Data first: once it is gone the object is gone, whatever happens to the sidecar.
            for target in (path, self._meta_path(key)):
                try:
                    target.unlink()
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if self.fsync:
                    _fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(f"{self.describe()}: {key}: delete failed: {exc}") from exc

    def describe(self) -> str:
        return f"local:{self.root}"

    def remove_unfinished_writes(self, prefix: str) -> int:
        """Remove what killed writes left under `prefix` (a folder: ends with '/'): their
        temporaries, by the rules above, and metadata sidecars whose object never appeared.
        For a writer that owns the prefix (it holds the shards' leases), before it writes
        there; returns how many files were removed."""
        folder = prefix.rstrip("/")
        if not folder:
            raise StoreError(f"{self.describe()}: unfinished writes are removed by folder")
        data = self._path(folder)
        removed = 0
        try:
            for directory, _dirs, files in os.walk(data):
                removed += self._sweep(Path(directory), files)
            for directory, _dirs, files in os.walk(self.root / META_DIR / folder):
                removed += self._sweep(Path(directory), files)
                removed += self._remove_orphaned_sidecars(Path(directory), files)
        except OSError as exc:
            raise StoreError(f"{self.describe()}: cannot clear {prefix!r}: {exc}") from exc
        return removed

    # --- internals ------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        segments = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\x00" in key
            or ".." in key
            or any(segment in ("", ".") for segment in segments)
            or segments[0] == META_DIR
            or any(_TEMP_NAME.match(segment) for segment in segments)
        ):
            raise StoreError(f"{self.describe()}: invalid object key {key!r}")
        return self.root.joinpath(*segments)

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (key + ".json")

    def _read_metadata(self, key: str) -> dict[str, str]:
        try:
            loaded = json.loads(self._meta_path(key).read_bytes())
        except FileNotFoundError:
            return {}
        if not isinstance(loaded, dict):
            raise ValueError(f"metadata sidecar for {key!r} is not a JSON object")
        return {str(name): str(value) for name, value in loaded.items()}

    def _write_atomically(self, path: Path, data: Buffer) -> None:
        self._ensure_dir(path.parent)
        self._sweep_once(path.parent)
        temp = path.with_name(f".{path.name}.{_WRITER}-{os.getpid()}-{secrets.token_hex(8)}.tmp")
        _LIVE.add(str(temp))
        try:
            with self._create(temp) as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            self.publish(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            _LIVE.discard(str(temp))
        if self.fsync:
            _fsync_dir(path.parent)

    def _create(self, temp: Path) -> BinaryIO:
        try:
            return open(temp, "xb")
        except FileNotFoundError:
            self._folders.clear()  # a folder was removed behind this store: make it again
            self._ensure_dir(temp.parent)
            return open(temp, "xb")

    def publish(self, temp: Path, path: Path) -> None:
        """The rename that makes a write visible (one step: never half of it). A method of its
        own so tests can stop a write between its data and its name."""
        os.replace(temp, path)

    # --- what killed writes left ------------------------------------------------------------

    def _sweep_once(self, directory: Path) -> None:
        """The first write or delete in a folder clears it of dead writes: a resumed run
        writes again where its killed attempt was writing."""
        with self._sweep_lock:
            if directory in self._swept:
                return
            self._swept.add(directory)
        try:
            with os.scandir(directory) as scan:
                names = [entry.name for entry in scan if entry.is_file(follow_symlinks=False)]
        except OSError:
            return  # not there yet, or unreadable: the write itself reports what matters
        self._sweep(directory, names)

    def _sweep(self, directory: Path, names: Iterable[str]) -> int:
        removed = 0
        now = time.time()
        for name in names:
            match = _TEMP_NAME.match(name)
            path = directory / name
            if match is None or str(path) in _LIVE:
                continue
            try:
                age = now - path.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # renamed or removed meanwhile
            pid = match.group("pid")
            if match.group("writer") == _WRITER and pid is not None:
                dead = int(pid) == os.getpid() or not _writer_alive(int(pid))
            else:
                dead = False  # on another host, or an older release: only age tells
            if dead or age > self.stale_after:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def _remove_orphaned_sidecars(self, directory: Path, names: Iterable[str]) -> int:
        """Metadata renamed into place by a put killed before its data was: no object."""
        removed = 0
        meta_root = self.root / META_DIR
        for name in names:
            if not name.endswith(".json") or _TEMP_NAME.match(name):
                continue
            sidecar = directory / name
            target = self.root / sidecar.relative_to(meta_root).with_name(name[: -len(".json")])
            if str(sidecar) in _PUBLISHING or target.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
                removed += 1
        return removed

    def _ensure_dir(self, directory: Path) -> None:
        """Make `directory` and the folders between it and the root, and their entries durable,
        before a write into it: once per folder for this store. A folder found already made has
        its entry synced as well: another put may have made it a moment ago, not yet synced."""
        if directory in self._folders:
            return
        if self.root not in self._folders:
            self._make_missing(self.root)
            self._folders.add(self.root)
        chain: list[Path] = []  # below the root, not known yet; deepest first
        current = directory
        while current not in self._folders and current != current.parent:
            chain.append(current)
            current = current.parent
        for folder in reversed(chain):
            with self._sweep_lock:
                if folder in self._folders:
                    continue
                other = self._making.get(folder)
                if other is None:
                    mine = self._making[folder] = threading.Event()
            if other is not None:  # another thread of this store is making it durable
                other.wait()
                continue
            try:
                self._make_durable(folder)
            finally:
                with self._sweep_lock:
                    del self._making[folder]
                mine.set()

    def _make_durable(self, folder: Path) -> None:
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise
        else:
            with self._sweep_lock:
                self._swept.add(folder)  # made empty here: no killed write can be in it
        if self.fsync:
            # A folder is durable only once its parent's entry is.
            _fsync_dir(folder.parent)
        self._folders.add(folder)

    def _make_missing(self, directory: Path) -> None:
        """mkdir -p, each folder made durable in its parent."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for new_dir in reversed(missing):
            try:
                new_dir.mkdir()
            except FileExistsError:
                if not new_dir.is_dir():
                    raise
                continue
            if self.fsync:
                _fsync_dir(new_dir.parent)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sort directories as "name/" so the walk yields keys in plain string order:
        # "a-b" < "a/c" because "-" < "/".
        ordered: list[tuple[str, os.DirEntry[str]]] = []
        for entry in entries:
            if rel == "" and entry.name == META_DIR:
                continue
            if _TEMP_NAME.match(entry.name):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            ordered.append((rel + entry.name + ("/" if is_dir else ""), entry))
        ordered.sort(key=lambda item: item[0])
        for name, entry in ordered:
            if name.endswith("/"):
                if name.startswith(prefix) or prefix.startswith(name):
                    yield from self._walk(Path(entry.path), name, prefix)
            elif name.startswith(prefix):
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # deleted while listing
                yield ObjectInfo(key=name, size=size)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

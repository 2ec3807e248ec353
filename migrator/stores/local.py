"""`ObjectStore` on a local directory: one file per key, written atomically.

Layout under `root`:
  <key>                   the object's bytes, exactly as given
  .meta/<key>.json        its metadata, renamed into place before the data
  .<name>.<uuid>.tmp      a write in progress (or one a crash interrupted); never listed
"""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from migrator.errors import MissingObjectError, StoreError
from migrator.stores.base import Buffer, ObjectInfo

META_DIR = ".meta"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


class LocalStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    def put(self, key: str, data: Buffer, metadata: dict[str, str] | None = None) -> None:
        path = self._path(key)
        try:
            # Metadata first, so an object that is visible always has its metadata. A crash
            # between the two renames of an overwrite leaves the old bytes with the new
            # metadata; the object was never confirmed, so the engine redoes it.
            meta_bytes = json.dumps(dict(metadata or {}), sort_keys=True).encode()
            self._write_atomically(self._meta_path(key), meta_bytes)
            self._write_atomically(path, data)
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
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "xb") as handle:
                handle.write(data)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_dir(path.parent)

    def _ensure_dir(self, directory: Path) -> None:
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
                # A new directory is durable only once its parent's entry is.
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

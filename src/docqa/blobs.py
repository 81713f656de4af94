"""Where uploaded files live: a small `BlobStore` interface and the local-directory store.

An S3 (or any object store) implementation needs only these four operations.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

READ_CHUNK = 1024 * 1024


class BlobWriter(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def commit(self, key: str) -> None:
        """Make the written bytes visible under `key`, atomically."""

    async def abort(self) -> None:
        """Throw away whatever was written. Safe to call more than once."""


class BlobStore(Protocol):
    def writer(self) -> BlobWriter: ...

    def read(self, key: str) -> AsyncIterator[bytes]: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for `key`, where the store has one (extraction reads it)."""

    async def delete(self, key: str) -> None: ...


class _LocalWriter:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._tmp = root / "tmp" / uuid.uuid4().hex
        self._file = open(self._tmp, "wb")  # noqa: SIM115  (closed in commit/abort)

    async def write(self, data: bytes) -> None:
        # A network-sized chunk (≤64 KB) lands in the page cache in microseconds: writing it
        # inline is cheaper than a thread hop, and copies nothing. The fsync runs on a thread.
        self._file.write(data)

    async def commit(self, key: str) -> None:
        await asyncio.to_thread(self._finish, key)

    def _finish(self, key: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target = self._root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)

    async def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under one directory. Keys are relative paths made by docqa, never users."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def writer(self) -> BlobWriter:
        return _LocalWriter(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("blob key escapes the store")
        return path

    async def read(self, key: str) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
                yield chunk
        finally:
            f.close()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

"""Where uploaded files live: the `BlobStore` interface, the local-directory store, and
`make_blob_store(settings)`, which picks the store `DOCQA_BLOB_URL` names (the S3-compatible one
is in `docqa.s3blobs`).

Keys are relative paths made by docqa (`ab/<document pk>`, `pages/<pk>/<page>-<width>.png`),
never by users.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from docqa.errors import DocqaError

if TYPE_CHECKING:
    from docqa.settings import Settings

READ_CHUNK = 1024 * 1024


class BlobNotFound(DocqaError, LookupError):
    """No blob is stored under the key. Through the API (a document whose file is gone), a 404
    that does not name the key."""

    status_code = 404
    code = "file_missing"

    def __init__(self, key: str) -> None:
        super().__init__("The document's file is no longer in storage.")
        self.key = key


class StorageUnavailable(DocqaError):
    """The object store did not answer, or refused docqa's credentials or bucket."""

    status_code = 503
    code = "storage_unavailable"


class BlobWriter(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def commit(self, key: str) -> None:
        """Make the written bytes visible under `key`, atomically."""

    async def abort(self) -> None:
        """Throw away whatever was written. Safe to call more than once."""


class BlobStore(Protocol):
    def writer(self) -> BlobWriter:
        """A writer for a new blob whose key is chosen when it is committed."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive; raises `BlobNotFound`."""

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A filesystem path holding the blob while the block runs (extraction reads files);
        raises `BlobNotFound`. Whatever was made for the block is removed after it."""

    async def put(self, key: str, data: bytes) -> None:
        """Store a small blob (a rendered page) in one request, replacing any old one."""

    async def get(self, key: str) -> bytes | None:
        """A small blob's bytes, or None when there is none."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a key with no blob is not an error."""

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under `prefix`, which ends with '/' (or is '' for all of them)."""

    async def aclose(self) -> None:
        """Release connections. The store is not used afterwards."""


async def opened(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks` with its first chunk already fetched, so that a missing blob or a storage outage
    raises before a response has started (a JSON error) rather than cutting one short."""
    first = await anext(chunks, None)

    async def rest() -> AsyncIterator[bytes]:
        if first is not None:
            yield first
            async for chunk in chunks:
                yield chunk

    return rest()


def check_key(key: str) -> None:
    """Refuse keys that could step outside the store, or that S3 and a filesystem disagree on."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"blob key escapes the store or is malformed: {key!r}")


def check_prefix(prefix: str) -> None:
    if prefix:
        if not prefix.endswith("/"):
            raise ValueError(f"a blob prefix ends with '/': {prefix!r}")
        check_key(prefix[:-1])


class _LocalWriter:
    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._tmp = store.root / "tmp" / uuid.uuid4().hex
        self._file = open(self._tmp, "wb")  # noqa: SIM115  (closed in commit/abort)

    async def write(self, data: bytes) -> None:
        # A network-sized chunk (≤64 KB) lands in the page cache in microseconds: writing it
        # inline is cheaper than a thread hop, and copies nothing. The fsync runs on a thread.
        self._file.write(data)

    async def commit(self, key: str) -> None:
        target = self._store.path(key)
        await asyncio.to_thread(self._finish, target)

    def _finish(self, target: Path) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, target)

    async def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under one directory (`DATA_DIR/blobs`, or a `file://` blob URL)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def writer(self) -> BlobWriter:
        return _LocalWriter(self)

    def path(self, key: str) -> Path:
        """Where the blob under `key` lives (or would live)."""
        check_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    async def read(self, key: str) -> AsyncIterator[bytes]:
        try:
            f = await asyncio.to_thread(open, self.path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        try:
            while chunk := await asyncio.to_thread(f.read, READ_CHUNK):
                yield chunk
        finally:
            f.close()

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        # The file itself: no copy is needed, and nothing is removed afterwards.
        path = self.path(key)
        if not await asyncio.to_thread(path.is_file):
            raise BlobNotFound(key)
        yield path

    async def put(self, key: str, data: bytes) -> None:
        writer = _LocalWriter(self)
        try:
            await writer.write(data)
            await writer.commit(key)
        except BaseException:
            await writer.abort()
            raise

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self.path(key).read_bytes)
        except FileNotFoundError:
            return None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        await asyncio.to_thread(self._remove_tree, prefix)

    def _remove_tree(self, prefix: str) -> None:
        if not prefix:
            # Everything, but the directory and its tmp/ stay usable for writers.
            for child in self.root.iterdir():
                if child.name != "tmp":
                    shutil.rmtree(child) if child.is_dir() else child.unlink(missing_ok=True)
            return
        folder = self.path(prefix[:-1])
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)

    async def aclose(self) -> None:
        return None


def make_blob_store(settings: Settings, *, scope: str | None = None) -> BlobStore:
    """The store `settings.blob_url` names: unset, `DATA_DIR/blobs`; `file:///path`, that
    directory; `s3://bucket/prefix`, an S3-compatible bucket (see docs/storage.md).

    `scope` narrows the store to a folder of its own that its caller alone uses and removes
    with `delete_prefix("")` (an evaluation run, for one).
    """
    url = settings.blob_url
    if not url:
        root = settings.blob_dir
    else:
        parts = urlsplit(url)
        if parts.scheme == "s3":
            from docqa.s3blobs import S3BlobStore

            return S3BlobStore.from_settings(settings, scope=scope)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(
                f"DOCQA_BLOB_URL must be s3://bucket/prefix or file:///absolute/path, not {url!r}"
            )
        root = Path(unquote(parts.path))
    if scope:
        check_key(scope)
        root = root / scope
    return LocalBlobStore(root)

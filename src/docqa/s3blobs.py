"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through aiobotocore.

Uploads stream as multipart uploads and hold at most one part in memory. S3 cannot rename, and
an upload's key is only known once its document row exists, so a file larger than one part goes
to `<prefix>/tmp/<random>` first and is copied inside the bucket on commit; a smaller one is
sent in a single request straight to its key. A failed or aborted upload aborts its multipart
upload, so neither an object nor hidden parts stay behind. A process that dies mid-upload can
leave a pending upload under `tmp/`: docs/storage.md gives the lifecycle rule that clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from docqa.blobs import (
    READ_CHUNK,
    BlobNotFound,
    BlobWriter,
    StorageUnavailable,
    check_key,
    check_prefix,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

    from docqa.settings import Settings

log = logging.getLogger(__name__)

MB = 1024 * 1024
MIN_PART = 5 * MB  # S3 refuses smaller parts, except the last
MAX_COPY = 5 * 1024 * MB  # the largest object one CopyObject request can copy
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_UNAVAILABLE = "The file storage cannot be reached right now; please try again in a moment."


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # '' or 'some/folder', no slash at either end

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"an S3 blob URL looks like s3://bucket/prefix, not {url!r}")
        prefix = unquote(parts.path).strip("/")
        if prefix:
            check_key(prefix)
        return cls(parts.netloc, prefix)

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


@contextlib.contextmanager
def _s3_errors(
    operation: str, key: str = "", not_found: frozenset[str] = _NOT_FOUND
) -> Iterator[None]:
    """botocore's errors as docqa's: a missing key (`not_found` codes) is `BlobNotFound`;
    anything else (no route, wrong credentials, no bucket, a 5xx after retries) is
    `StorageUnavailable`, a 503."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in not_found:
            raise BlobNotFound(key) from None
        log.error("object storage refused a request", extra={"op": operation, "s3_code": code})
        raise StorageUnavailable(_UNAVAILABLE) from exc
    except BotoCoreError as exc:
        log.error(
            "object storage unreachable", extra={"op": operation, "error": type(exc).__name__}
        )
        raise StorageUnavailable(_UNAVAILABLE) from exc


class _S3Writer:
    """Buffers one part; each full part is sent before more is accepted (the caller's await
    is the back-pressure), so memory stays at one part per upload in flight."""

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self._buf = io.BytesIO()
        self._tmp_key: str | None = None
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._tmp_complete = False  # the tmp object exists, waiting to be copied

    async def write(self, data: bytes) -> None:
        self._buf.write(data)
        if self._buf.tell() >= self._store.part_size:
            await self._send_part()

    async def _send_part(self) -> None:
        client = await self._store.client()
        bucket = self._store.location.bucket
        if self._upload_id is None:
            self._tmp_key = self._store.location.key(f"tmp/{uuid.uuid4().hex}")
            with _s3_errors("create_multipart_upload"):
                created = await client.create_multipart_upload(Bucket=bucket, Key=self._tmp_key)
            self._upload_id = created["UploadId"]
        assert self._tmp_key is not None
        body, self._buf = self._buf, io.BytesIO()
        body.seek(0)  # botocore reads (and signs) the buffer itself: no copy of the part
        number = len(self._parts) + 1
        with _s3_errors("upload_part"):
            sent = await client.upload_part(
                Bucket=bucket, Key=self._tmp_key, UploadId=self._upload_id,
                PartNumber=number, Body=body,
            )  # fmt: skip
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    async def commit(self, key: str) -> None:
        target = self._store.location.key(key)
        check_key(key)
        client = await self._store.client()
        bucket = self._store.location.bucket
        if self._upload_id is None:  # it fits in one part: one request, straight to its key
            body, self._buf = self._buf, io.BytesIO()
            body.seek(0)
            with _s3_errors("put_object"):
                await client.put_object(Bucket=bucket, Key=target, Body=body)
            return
        if self._buf.tell():
            await self._send_part()
        assert self._tmp_key is not None
        with _s3_errors("complete_multipart_upload"):
            await client.complete_multipart_upload(
                Bucket=bucket, Key=self._tmp_key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )  # fmt: skip
        self._upload_id, self._tmp_complete = None, True
        with _s3_errors("copy_object"):
            await client.copy_object(
                Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": self._tmp_key}
            )
        await self.abort()  # now only removes the tmp object

    async def abort(self) -> None:
        # Best effort, and never raising: it runs while another error propagates. What it cannot
        # remove, the bucket's lifecycle rule for tmp/ does (docs/storage.md).
        self._buf = io.BytesIO()
        tmp_key, upload_id, complete = self._tmp_key, self._upload_id, self._tmp_complete
        self._tmp_key, self._upload_id, self._tmp_complete = None, None, False
        if tmp_key is None:
            return
        bucket = self._store.location.bucket
        try:
            client = await self._store.client()
            if upload_id is not None:
                with _s3_errors("abort_multipart_upload", tmp_key, frozenset({"NoSuchUpload"})):
                    await client.abort_multipart_upload(
                        Bucket=bucket, Key=tmp_key, UploadId=upload_id
                    )
            elif complete:
                with _s3_errors("delete_object"):
                    await client.delete_object(Bucket=bucket, Key=tmp_key)
        except BlobNotFound:
            pass  # already gone
        except StorageUnavailable:
            log.warning("an unfinished upload was left in object storage", extra={"key": tmp_key})


class S3BlobStore:
    """A `BlobStore` on an S3-compatible bucket, under an optional prefix."""

    def __init__(
        self,
        location: S3Location,
        *,
        scratch_dir: Path,
        part_size: int = 8 * MB,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
    ) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"S3 parts are at least {MIN_PART // MB} MB")
        self.location = location
        self.part_size = part_size
        self.scratch_dir = scratch_dir
        scratch_dir.mkdir(parents=True, exist_ok=True)
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._addressing_style = addressing_style
        self._client: S3Client | None = None
        self._stack = AsyncExitStack()
        self._opening = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, scope: str | None = None) -> S3BlobStore:
        assert settings.blob_url
        location = S3Location.parse(settings.blob_url)
        if scope:
            check_key(scope)
            location = S3Location(location.bucket, location.key(scope))
        if settings.max_upload_bytes > MAX_COPY:
            raise ValueError("with S3 storage, DOCQA_MAX_UPLOAD_MB can be at most 5120 (5 GB)")
        secret = settings.s3_secret_access_key
        return cls(
            location,
            scratch_dir=settings.data_dir / "scratch",
            part_size=settings.s3_part_mb * MB,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=(secret.get_secret_value() if secret else "") or None,
            addressing_style=settings.s3_addressing_style,
        )

    async def client(self) -> S3Client:
        """The one client of this store, opened on first use in the running event loop."""
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    self._client = await self._open()
        return self._client

    async def _open(self) -> S3Client:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            s3={"addressing_style": self._addressing_style},
            retries={"total_max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Checksums only where S3 requires them (DeleteObjects): the newer default adds a
            # CRC pass over every part and a trailer that several S3-compatible servers reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Unset arguments fall back to botocore's own chain: AWS_* variables, ~/.aws, roles.
        args = {k: v for k, v in self._client_args.items() if v is not None}
        client: S3Client = await self._stack.enter_async_context(
            get_session().create_client("s3", config=config, **args)
        )
        return client

    def writer(self) -> BlobWriter:
        return _S3Writer(self)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        check_key(key)
        client = await self.client()
        with _s3_errors("get_object", key):
            response = await client.get_object(
                Bucket=self.location.bucket, Key=self.location.key(key)
            )
        async with response["Body"] as body:
            with _s3_errors("get_object"):
                async for chunk in body.iter_chunks(READ_CHUNK):
                    yield chunk

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        fd, name = tempfile.mkstemp(dir=self.scratch_dir, prefix="blob-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in self.read(key):
                    await asyncio.to_thread(f.write, chunk)
            yield path
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        client = await self.client()
        with _s3_errors("put_object"):
            await client.put_object(
                Bucket=self.location.bucket, Key=self.location.key(key), Body=data
            )

    async def get(self, key: str) -> bytes | None:
        try:
            return b"".join([chunk async for chunk in self.read(key)])
        except BlobNotFound:
            return None

    async def exists(self, key: str) -> bool:
        check_key(key)
        client = await self.client()
        try:
            with _s3_errors("head_object", key):
                await client.head_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except BlobNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        check_key(key)
        client = await self.client()
        with _s3_errors("delete_object"):
            await client.delete_object(Bucket=self.location.bucket, Key=self.location.key(key))

    async def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        full = self.location.key(prefix)
        client = await self.client()
        bucket = self.location.bucket
        with _s3_errors("delete_objects"):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=full)
            async for page in pages:  # at most 1,000 keys a page, as DeleteObjects takes
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": item["Key"]} for item in page.get("Contents", [])
                ]
                if not keys:
                    continue
                result = await client.delete_objects(
                    Bucket=bucket, Delete={"Objects": keys, "Quiet": True}
                )
                if result.get("Errors"):
                    log.error(
                        "object storage kept some blobs", extra={"count": len(result["Errors"])}
                    )
                    raise StorageUnavailable(_UNAVAILABLE)

    async def aclose(self) -> None:
        self._client = None
        await self._stack.aclose()

"""Page images as the API serves them: which image a request names, its ETag and cache policy,
and its bytes, read from the blob store's cache or drawn (`docqa.render`) and stored there.

A cached image costs one query: the document and the page are looked up together. Every error
is the page text's own (`pages.read_page`), so both endpoints say the same thing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, select

from docqa import formats, pages, render
from docqa.blobs import BlobStore
from docqa.db.engine import Database
from docqa.db.models import Document, Page
from docqa.errors import DocqaError, DocumentNotFound

log = logging.getLogger(__name__)

# Pages drawn at once by one API process: each holds a sandbox process and an image in memory.
_DRAWING = asyncio.Semaphore(2)
# Images being stored after their response has gone (held so the tasks are not collected).
_STORING: set[asyncio.Task[None]] = set()
FOREVER = "private, max-age=31536000, immutable"
# Without the document's version in the URL the same URL can later show another document (an id
# is free again once its document is deleted): browsers keep the image but ask each time (304).
REVALIDATE = "private, no-cache"


class NoPageImage(DocqaError):
    status_code = 404
    code = "no_page_image"


@dataclass(frozen=True)
class Target:
    """The document a page image is drawn from."""

    pk: uuid.UUID
    kind: str
    sha256: str
    blob_key: str
    filename: str

    version: str  # what `v` must be for an image URL to be cached for good (pages.image_version)


async def find(
    db: Database, owner_id: str, document_id: str, page: int, *, again: bool = True
) -> Target:
    """The owner's ready document holding `page`, in one query. Raises what the page text
    raises (`DocumentNotFound`, `DocumentNotReady`, `PageNotFound`), or `NoPageImage`."""
    query = (
        select(Document, Page.page_no)
        .outerjoin(Page, and_(Page.document_pk == Document.pk, Page.page_no == page))
        .where(Document.owner_id == owner_id, Document.document_id == document_id)
    )
    async with db.session() as session:
        row = (await session.execute(query)).one_or_none()
    if row is None or row[0].status != "ready" or row[1] is None:
        await pages.read_page(db, owner_id, document_id, page)  # raises the page text's error
        if again:  # it became ready meanwhile
            return await find(db, owner_id, document_id, page, again=False)
        raise DocumentNotFound(f"There is no document with the id '{document_id}'.")
    doc: Document = row[0]
    kind = formats.get(doc.kind)
    if not kind.page_images:
        raise NoPageImage(
            f"'{doc.filename}' has no page images ({kind.name}); "
            f"its page {page} can be read as text."
        )
    version = pages.image_version(doc)
    assert version is not None  # the format has page images
    return Target(doc.pk, doc.kind, doc.sha256, doc.blob_key, doc.filename, version)


def etag(target: Target, page: int, width: int, fmt: render.ImageFormat) -> str:
    tag = f"{target.sha256}:{page}:{width}:{fmt}:{render.RENDER_VERSION}"
    return f'"{hashlib.sha256(tag.encode()).hexdigest()[:32]}"'


async def image_bytes(
    db: Database, store: BlobStore, target: Target, page: int, width: int, fmt: render.ImageFormat
) -> bytes:
    """The image from the cache, or drawn in the sandbox; a drawn image is stored for next time
    while it is already on its way (a cache need not wait for the disk)."""
    key = f"pages/{target.pk.hex}/{page}-{width}-{render.RENDER_VERSION}.{fmt}"
    data = await store.get(key)
    if data is not None:
        return data
    async with _DRAWING, store.local_copy(target.blob_key) as path:
        data = await asyncio.to_thread(render.render_page, path, target.kind, page, width, fmt)
    task = asyncio.create_task(_keep(db, store, target, key, data))
    _STORING.add(task)
    task.add_done_callback(_STORING.discard)
    return data


async def _keep(db: Database, store: BlobStore, target: Target, key: str, data: bytes) -> None:
    try:
        await store.put(key, data)
        async with db.session() as session:
            still = await session.scalar(select(Document.pk).where(Document.pk == target.pk))
        if still is None:  # deleted while it was drawn: leave no image behind
            await store.delete_prefix(f"pages/{target.pk.hex}/")
    except Exception:  # a page not kept is drawn again next time
        log.warning("could not keep a page image", exc_info=True)

"""What was read from a document, page by page, and the formats docqa reads."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from docqa import documents, formats, pages, render
from docqa.api.deps import Owner, State
from docqa.api.errors import error_responses
from docqa.db.models import Document
from docqa.errors import DocqaError, DocumentNotFound
from docqa.upload import DOCUMENT_ID_PATTERN, DOCUMENT_ID_RULE

router = APIRouter(prefix="/api/v1", tags=["documents"])
DocumentId = Annotated[str, Path(pattern=DOCUMENT_ID_PATTERN, description=DOCUMENT_ID_RULE)]

PageNumber = Annotated[int, Path(ge=1, le=1_000_000, description="1-based page number")]
# Pages drawn at once by one API process: each holds a sandbox process and an image in memory.
_DRAWING = asyncio.Semaphore(2)
_IMAGE_CACHE = "private, max-age=31536000, immutable"
# Without the document's version in the URL the same URL can later show another document (an id
# is free again once its document is deleted): browsers keep the image but ask each time (304).
_IMAGE_REVALIDATE = "private, no-cache"


class NoPageImage(DocqaError):
    status_code = 404
    code = "no_page_image"


@router.get("/documents/{document_id}/pages/{page}", responses=error_responses(404, 409))
async def get_page(
    document_id: DocumentId, page: PageNumber, state: State, owner: Owner
) -> dict[str, Any]:
    """The text docqa read from one page (a slide, sheet part or section for other formats),
    whether it was recognised by OCR, and how many tables it holds; `image_version` (null for
    formats without page images) goes into the image's URL as `v`."""
    view = await pages.read_page(state.db, owner, document_id, page)
    doc = await documents.get_document(state.db, owner, document_id)
    return view.public() | {"image_version": _version(doc)}


def _version(doc: Document) -> str | None:
    return doc.sha256[:16] if formats.get(doc.kind).page_images else None


@router.get(
    "/documents/{document_id}/pages/{page}/image",
    responses={
        **error_responses(404, 409, 422),
        200: {"content": {"image/webp": {}, "image/png": {}}, "description": "the page"},
        304: {"description": "the cached image is still current"},
    },
    response_class=Response,
)
async def get_page_image(
    document_id: DocumentId,
    page: PageNumber,
    state: State,
    owner: Owner,
    width: Annotated[
        int, Query(ge=1, le=10_000, description="pixels; served within 100-2000")
    ] = 1000,
    image_format: Annotated[
        Literal["webp", "png"] | None, Query(alias="format", description="default: WebP")
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    v: Annotated[
        str | None,
        Query(max_length=64, description="the page's `image_version`: cacheable for good"),
    ] = None,
) -> Response:
    """The page as an image, for showing where a citation sits: a PDF page drawn at `width`
    pixels, or an image document's frame. Formats without page images answer 404
    `no_page_image` (show the page's text instead). With `v` the document's current version
    (`image_version` of the page's text), the response may be cached for good; without it,
    browsers revalidate (ETag, 304)."""
    view = await pages.read_page(state.db, owner, document_id, page)  # 404/409 as for text
    doc = await documents.get_document(state.db, owner, document_id)
    if not formats.get(doc.kind).page_images:
        raise NoPageImage(
            f"'{doc.filename}' has no page images ({formats.get(doc.kind).name}); "
            f"its page {view.page} can be read as text."
        )
    fmt = image_format or "webp"
    served = render.snap_width(width)
    tag = hashlib.sha256(
        f"{doc.sha256}:{page}:{served}:{fmt}:{render.RENDER_VERSION}".encode()
    ).hexdigest()[:32]
    etag = f'"{tag}"'
    cache = _IMAGE_CACHE if v is not None and v == _version(doc) else _IMAGE_REVALIDATE
    headers = {"ETag": etag, "Cache-Control": cache, "X-Image-Width": str(served)}
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    key = f"pages/{doc.pk.hex}/{page}-{served}-{render.RENDER_VERSION}.{fmt}"
    data = await state.store.get(key)
    if data is None:
        async with _DRAWING, state.store.local_copy(doc.blob_key) as path:
            data = await asyncio.to_thread(render.render_page, path, doc.kind, page, served, fmt)
        await state.store.put(key, data)
        try:
            await documents.get_document(state.db, owner, document_id)
        except DocumentNotFound:  # deleted while it was drawn: leave no image behind
            await state.store.delete_prefix(f"pages/{doc.pk.hex}/")
            raise
    return Response(content=data, media_type=f"image/{fmt}", headers=headers)


@router.get("/formats")
async def list_formats() -> dict[str, Any]:
    """The kinds of file docqa accepts, with their extensions and media types."""
    return {"formats": formats.public_list()}

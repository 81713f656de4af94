"""What was read from a document, page by page, and the formats docqa reads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from docqa import formats, page_images, pages, render
from docqa.api.deps import Owner, State
from docqa.api.errors import error_responses
from docqa.upload import DOCUMENT_ID_PATTERN, DOCUMENT_ID_RULE

router = APIRouter(prefix="/api/v1", tags=["documents"])
DocumentId = Annotated[str, Path(pattern=DOCUMENT_ID_PATTERN, description=DOCUMENT_ID_RULE)]

PageNumber = Annotated[int, Path(ge=1, le=1_000_000, description="1-based page number")]


@router.get("/documents/{document_id}/pages/{page}", responses=error_responses(404, 409))
async def get_page(
    document_id: DocumentId, page: PageNumber, state: State, owner: Owner
) -> dict[str, Any]:
    """The text docqa read from one page (a slide, sheet part or section for other formats),
    whether it was recognised by OCR, and how many tables it holds; `image_version` (null for
    formats without page images) goes into the image's URL as `v`."""
    view = await pages.read_page(state.db, owner, document_id, page)
    return view.public() | {"image_version": view.image_version}


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
    target = await page_images.find(state.db, owner, document_id, page)
    fmt = image_format or "webp"
    served = render.snap_width(width)
    etag = page_images.etag(target, page, served, fmt)
    cache = page_images.FOREVER if v == target.version else page_images.REVALIDATE
    headers = {"ETag": etag, "Cache-Control": cache, "X-Image-Width": str(served)}
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    data = await page_images.image_bytes(state.db, state.store, target, page, served, fmt)
    return Response(content=data, media_type=f"image/{fmt}", headers=headers)


@router.get("/formats")
async def list_formats() -> dict[str, Any]:
    """The kinds of file docqa accepts, with their extensions and media types."""
    return {"formats": formats.public_list()}

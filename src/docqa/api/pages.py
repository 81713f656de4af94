"""What was read from a document, page by page, and the formats docqa reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from docqa import formats, pages
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
    whether it was recognised by OCR, and how many tables it holds."""
    view = await pages.read_page(state.db, owner, document_id, page)
    return view.public()


@router.get("/formats")
async def list_formats() -> dict[str, Any]:
    """The kinds of file docqa accepts, with their extensions and media types."""
    return {"formats": formats.public_list()}

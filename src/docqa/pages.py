"""What docqa read from one page of a document (a page, a slide, a sheet part or a section).

Pages are stored when processing ends, so a document has pages once it is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from docqa import documents, formats
from docqa.db.engine import Database
from docqa.db.models import Document, Page
from docqa.errors import DocumentNotReady, PageNotFound


@dataclass(frozen=True)
class PageView:
    document_id: str
    page: int
    page_count: int
    text: str
    ocr: bool
    tables: int
    heading: str
    image_version: str | None  # goes into the page image's URL as `v`; None: no page images

    def public(self) -> dict[str, object]:
        """The JSON of `GET /api/v1/documents/{id}/pages/{n}`."""
        return {
            "page": self.page,
            "text": self.text,
            "ocr": self.ocr,
            "tables": self.tables,
            "heading": self.heading,
            "page_count": self.page_count,
        }


def image_version(doc: Document) -> str | None:
    """The version of a document's page images (it names their bytes: a URL carrying it can be
    cached for good), or None for formats without page images."""
    return doc.sha256[:16] if formats.get(doc.kind).page_images else None


async def read_page(db: Database, owner_id: str, document_id: str, page_no: int) -> PageView:
    """One page of one of the owner's documents. Raises `DocumentNotFound`, `DocumentNotReady`
    (nothing is stored before a document is ready) or `PageNotFound`."""
    doc = await documents.get_document(db, owner_id, document_id)
    if doc.status != "ready":
        detail = (
            f"The document '{document_id}' could not be processed, so it has no pages."
            if doc.status == "failed"
            else f"The document '{document_id}' is {doc.status}; its pages are stored once "
            "it is ready."
        )
        raise DocumentNotReady(detail, status=doc.status, document_id=document_id)
    async with db.session() as session:
        row = (
            await session.execute(
                select(Page).where(Page.document_pk == doc.pk, Page.page_no == page_no)
            )
        ).scalar_one_or_none()
    count = doc.page_count or 0
    if row is None:
        raise PageNotFound(
            f"The document '{document_id}' has no page {page_no}: its pages are 1 to {count}."
            if count
            else f"The document '{document_id}' has no pages."
        )
    return PageView(
        document_id, page_no, count, row.text, row.ocr, row.tables, row.heading, image_version(doc)
    )

"""The lexical index: a document's postings, written when it becomes ready.

Ingestion writes it and `search.lexical` reads it, just as the vectors are written at ingest and
read at query time.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Posting rows of one document, from its chunks' stored tsvectors. Every lexeme of a tsvector
# built by to_tsvector has positions; the coalesce covers one that was stripped of them.
_INDEX_TERMS_SQL = text(
    """
    INSERT INTO postings (owner_id, lexeme, document_pk, chunk_ids, tfs, dls)
    SELECT c.owner_id, t.lexeme, c.document_pk,
           array_agg(c.id ORDER BY c.id),
           array_agg(coalesce(cardinality(t.positions), 1)::int2 ORDER BY c.id),
           array_agg(c.token_count ORDER BY c.id)
    FROM chunks c CROSS JOIN unnest(c.tsv) AS t
    WHERE c.document_pk = :pk
    GROUP BY c.owner_id, t.lexeme, c.document_pk
    """
)


async def index_terms(session: AsyncSession, document_pk: uuid.UUID) -> None:
    """Write a document's postings, from its stored chunks.

    Call it once, in the transaction that makes the document ready: retrieval searches ready
    documents only, so their postings are always complete.
    """
    await session.execute(_INDEX_TERMS_SQL, {"pk": document_pk})

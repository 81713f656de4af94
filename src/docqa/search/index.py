"""The lexical index: a document's postings, written when it becomes ready.

Ingestion writes it and `search.lexical` reads it, just as the vectors are written at ingest and
read at query time.

A posting row holds, for one lexeme of one document, a block of at most `BLOCK` of the chunks
holding it, packed as `ENTRY` records ordered by chunk id. The primary key's index carries the
block, so the rows of one lexeme are read together by an index-only scan (migration 0008 says
why and measures it).
"""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# One chunk in a posting block: its id, the lexeme's frequency in it and its length in tokens,
# big-endian as PostgreSQL's int8send, int2send and int4send write them. 14 bytes.
ENTRY = np.dtype([("chunk_id", ">i8"), ("tf", ">i2"), ("dl", ">i4")])
# Chunks a block holds at most: 32 entries (448 bytes) stay below the size at which PostgreSQL
# compresses a value stored in an index row (about 509 bytes), so a block is never compressed.
BLOCK = 32
_BLOCK_BYTES = BLOCK * ENTRY.itemsize

# Posting rows of one document, from its chunks' stored tsvectors: each lexeme's entries packed
# in chunk order, then cut into blocks of `BLOCK` entries. Every lexeme of a tsvector built by
# to_tsvector has positions; the coalesce covers one that was stripped of them.
_INDEX_TERMS_SQL = text(
    """
    INSERT INTO postings (owner_id, lexeme, document_pk, block, entries)
    SELECT l.owner_id, l.lexeme, l.document_pk, b.block::int2,
           substring(l.entries FROM b.block * :block_bytes + 1 FOR :block_bytes)
    FROM (
        SELECT c.owner_id, t.lexeme, c.document_pk,
               string_agg(int8send(c.id) || int2send(coalesce(cardinality(t.positions), 1)::int2)
                          || int4send(c.token_count), ''::bytea ORDER BY c.id) AS entries
        FROM chunks c CROSS JOIN unnest(c.tsv) AS t
        WHERE c.document_pk = :pk
        GROUP BY c.owner_id, t.lexeme, c.document_pk
    ) l
    CROSS JOIN generate_series(0, (length(l.entries) - 1) / :block_bytes) AS b(block)
    """
)


async def index_terms(session: AsyncSession, document_pk: uuid.UUID) -> None:
    """Write a document's postings, from its stored chunks.

    Call it once, in the transaction that makes the document ready: retrieval searches ready
    documents only, so their postings are always complete.
    """
    await session.execute(_INDEX_TERMS_SQL, {"pk": document_pk, "block_bytes": _BLOCK_BYTES})

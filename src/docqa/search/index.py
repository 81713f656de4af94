"""The lexical index: a document's postings, written when it becomes ready.

Ingestion writes it and `search.lexical` reads it, just as the vectors are written at ingest and
read at query time.

A posting row holds, for one lexeme of one document, a block of at most `BLOCK` of the chunks
holding it, ordered by chunk id: the block's first chunk id (`first_id`), and one `RECORD` per
chunk. The primary key's index carries both, so the rows of one lexeme are read together by an
index-only scan (migrations 0008 and 0009 say why and measure it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

# One chunk in a posting block: its id less the block's first chunk id, the lexeme's frequency
# in it and its length in word pieces, big-endian as PostgreSQL's int4send and int2send write
# them. 8 bytes (14 before migration 0009, with the whole id and an int4 length): the bytes a
# question reads are most of BM25's time at scale. A chunk is at most 254 word pieces
# (`ingest.chunk`), so its length fits an int2; it is clamped to 32,767 all the same.
RECORD = np.dtype([("offset", ">i4"), ("tf", ">i2"), ("dl", ">i2")])
# A block as the reader receives it beside the records: its first chunk id and its record count.
HEAD = np.dtype([("first_id", ">i8"), ("count", ">i2")])
# Chunks a block holds at most. 32 was chosen when a record took 14 bytes, to keep a block
# (448 bytes) below the size at which PostgreSQL compresses a value stored in an index (about
# 509 bytes); migration 0009 converts blocks row by row and keeps it.
BLOCK = 32

# Posting rows of documents, from their chunks' stored tsvectors: each lexeme's chunks in id
# order, numbered, cut into blocks of `BLOCK`, each block's ids stored from its first. Every
# lexeme of a tsvector built by to_tsvector has positions; the coalesce covers one that was
# stripped of them. An offset beyond an int4 (four billion chunk ids between two chunks of one
# document) fails the cast rather than writing a wrong id.
_INDEX_TERMS_SQL = text(
    """
    INSERT INTO postings (owner_id, lexeme, document_pk, block, first_id, entries)
    SELECT e.owner_id, e.lexeme, e.document_pk, e.block::int2, e.first_id,
           string_agg(int4send((e.id - e.first_id)::int4) || int2send(e.tf) || int2send(e.dl),
                      ''::bytea ORDER BY e.id)
    FROM (
        SELECT n.*, min(n.id) OVER (PARTITION BY n.document_pk, n.lexeme, n.block) AS first_id
        FROM (
            SELECT c.owner_id, t.lexeme, c.document_pk, c.id,
                   coalesce(cardinality(t.positions), 1)::int2 AS tf,
                   least(c.token_count, 32767)::int2 AS dl,
                   (row_number() OVER (PARTITION BY c.document_pk, t.lexeme ORDER BY c.id) - 1)
                   / :block AS block
            FROM chunks c CROSS JOIN unnest(c.tsv) AS t
            WHERE c.document_pk = ANY(:pks)
        ) n
    ) e
    GROUP BY e.owner_id, e.lexeme, e.document_pk, e.block, e.first_id
    """
).bindparams(bindparam("pks", type_=ARRAY(UUID(as_uuid=True))))


async def index_terms(session: AsyncSession, document_pks: Sequence[uuid.UUID]) -> None:
    """Write documents' postings, from their stored chunks.

    Call it once per document, in the transaction that makes it ready: retrieval searches ready
    documents only, so their postings are always complete.
    """
    await session.execute(_INDEX_TERMS_SQL, {"pks": list(document_pks), "block": BLOCK})

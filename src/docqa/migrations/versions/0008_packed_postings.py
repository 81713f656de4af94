"""postings: packed blocks of at most 32 chunks, held in the primary key's index

Revision ID: 0008
Revises: 0007

BM25 over a whole library reads every posting row of every question term. With one row per
(owner, lexeme, document) holding three arrays, the rows of one lexeme lie wherever their
documents' rows were written, one heap page each: a question over 1M chunks touched about 64,000
pages, most of them outside PostgreSQL's buffers, and that was most of its 555 ms.

Now a row holds one block of at most 32 of a document's chunks for one lexeme, packed as
fixed-size big-endian records (chunk id int8, term frequency int2, length int4; 14 bytes each,
by chunk id; migration 0009 made them smaller), and the primary key's index carries that block
(`INCLUDE (entries)`). The rows of one lexeme are then neighbours in the index's leaf pages and
are read by an index-only scan. 32 records (448 bytes) keep every value under the size at which
PostgreSQL compresses values inside an index (about 509 bytes), so no block is ever compressed
and no index row comes near its limit (2,704 bytes), however long the document.

The heap still holds the rows (the index-only scan needs the visibility map, kept by autovacuum:
the table's insert scale factor is lowered so that new documents' pages are marked visible
sooner). Existing postings are converted here, row by row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "postings_packed",
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("document_pk", sa.UUID(), nullable=False),
        sa.Column("block", sa.SmallInteger(), nullable=False),
        sa.Column("entries", sa.LargeBinary(), nullable=False),
    )
    op.execute(
        """
        INSERT INTO postings_packed (owner_id, lexeme, document_pk, block, entries)
        SELECT p.owner_id, p.lexeme, p.document_pk, b.block, b.entries
        FROM postings p CROSS JOIN LATERAL (
            SELECT ((u.n - 1) / 32)::int2 AS block,
                   string_agg(int8send(u.id) || int2send(u.tf) || int4send(u.dl), ''::bytea
                              ORDER BY u.n) AS entries
            FROM unnest(p.chunk_ids, p.tfs, p.dls) WITH ORDINALITY AS u(id, tf, dl, n)
            GROUP BY 1
        ) b
        """
    )
    op.drop_table("postings")
    op.rename_table("postings_packed", "postings")
    op.execute(
        "ALTER TABLE postings ADD CONSTRAINT postings_pkey "
        "PRIMARY KEY (owner_id, lexeme, document_pk, block) INCLUDE (entries)"
    )
    _document_key()
    op.execute("ALTER TABLE postings SET (autovacuum_vacuum_insert_scale_factor = 0.02)")


def _document_key() -> None:
    """The foreign key to the document, and the index that finds its rows when it goes."""
    op.create_foreign_key(
        "postings_document_pk_fkey",
        "postings",
        "documents",
        ["document_pk"],
        ["pk"],
        ondelete="CASCADE",
    )
    op.create_index("ix_postings_document", "postings", ["document_pk"], unique=False)


def downgrade() -> None:
    op.create_table(
        "postings_arrays",
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("document_pk", sa.UUID(), nullable=False),
        sa.Column("chunk_ids", sa.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("tfs", sa.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("dls", sa.ARRAY(sa.Integer()), nullable=False),
    )
    op.execute(
        """
        INSERT INTO postings_arrays (owner_id, lexeme, document_pk, chunk_ids, tfs, dls)
        SELECT p.owner_id, p.lexeme, p.document_pk,
               array_agg(('x' || encode(substring(p.entries FROM e.at FOR 8), 'hex'))::bit(64)::int8
                         ORDER BY p.block, e.at),
               array_agg(('x' || encode(substring(p.entries FROM e.at + 8 FOR 2), 'hex'))::bit(16)
                             ::int4::int2 ORDER BY p.block, e.at),
               array_agg(('x' || encode(substring(p.entries FROM e.at + 10 FOR 4), 'hex'))::bit(32)
                             ::int4 ORDER BY p.block, e.at)
        FROM postings p CROSS JOIN generate_series(1, length(p.entries), 14) AS e(at)
        GROUP BY p.owner_id, p.lexeme, p.document_pk
        """
    )
    op.drop_table("postings")
    op.rename_table("postings_arrays", "postings")
    op.create_primary_key("postings_pkey", "postings", ["owner_id", "lexeme", "document_pk"])
    _document_key()

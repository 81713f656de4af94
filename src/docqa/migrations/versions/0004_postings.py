"""postings: BM25's inverted index, one row per (owner, lexeme, document); documents.token_count

Revision ID: 0004
Revises: 0003

BM25 used to read each matching chunk's tsvector at query time: de-TOAST it, filter it down to
the query terms and unnest it, about 4 µs a chunk, which at 10k chunks was most of the time to
the first answer token. A posting row holds, for one lexeme of one document, the ids of the
chunks holding it with the term frequency and length of each, so the lookup is a handful of
index probes and a few hundred small rows. `documents.token_count` (the sum of its chunks'
lengths) gives BM25's average length without counting chunks.

The GIN index on `chunks.tsv` and the `token_count` that 0003 added to the owner/document index
served only the old query and are dropped; `tsv` itself stays, as the source the postings are
built from.

Existing ready documents get their postings and token counts here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "postings",
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("document_pk", sa.UUID(), nullable=False),
        sa.Column("chunk_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("tfs", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("dls", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.ForeignKeyConstraint(["document_pk"], ["documents.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id", "lexeme", "document_pk"),
    )
    op.create_index("ix_postings_document", "postings", ["document_pk"], unique=False)
    op.add_column(
        "documents",
        sa.Column("token_count", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.execute(
        """
        INSERT INTO postings (owner_id, lexeme, document_pk, chunk_ids, tfs, dls)
        SELECT c.owner_id, t.lexeme, c.document_pk,
               array_agg(c.id ORDER BY c.id),
               array_agg(coalesce(cardinality(t.positions), 1)::int2 ORDER BY c.id),
               array_agg(c.token_count ORDER BY c.id)
        FROM chunks c
        JOIN documents d ON d.pk = c.document_pk AND d.status = 'ready'
        CROSS JOIN unnest(c.tsv) AS t
        GROUP BY c.owner_id, t.lexeme, c.document_pk
        """
    )
    op.execute(
        """
        UPDATE documents d SET token_count = s.tokens
        FROM (SELECT document_pk, sum(token_count) AS tokens FROM chunks GROUP BY document_pk) s
        WHERE d.pk = s.document_pk
        """
    )
    op.drop_index("ix_chunks_tsv", table_name="chunks", postgresql_using="gin")
    op.drop_index("ix_chunks_owner_document", table_name="chunks")
    op.create_index("ix_chunks_owner_document", "chunks", ["owner_id", "document_pk"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chunks_owner_document", table_name="chunks")
    op.create_index(
        "ix_chunks_owner_document",
        "chunks",
        ["owner_id", "document_pk"],
        unique=False,
        postgresql_include=["token_count"],
    )
    op.create_index("ix_chunks_tsv", "chunks", ["tsv"], unique=False, postgresql_using="gin")
    op.drop_column("documents", "token_count")
    op.drop_index("ix_postings_document", table_name="postings")
    op.drop_table("postings")

"""chunks: the owner/document index also carries token_count, for BM25's collection statistics

Revision ID: 0003
Revises: 0002a

BM25 needs the number of chunks and their average length over the documents being searched.
With `token_count` in the index, PostgreSQL reads both from an index-only scan instead of
visiting every chunk row (text, vector and tsvector) of the filtered set.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002a"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_chunks_owner_document", table_name="chunks")
    op.create_index(
        "ix_chunks_owner_document",
        "chunks",
        ["owner_id", "document_pk"],
        unique=False,
        postgresql_include=["token_count"],
    )


def downgrade() -> None:
    op.drop_index("ix_chunks_owner_document", table_name="chunks")
    op.create_index("ix_chunks_owner_document", "chunks", ["owner_id", "document_pk"], unique=False)

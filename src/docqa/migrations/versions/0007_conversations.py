"""conversations and their turns

Revision ID: 0007
Revises: 0006

A conversation belongs to one owner; each turn keeps the question, the standalone question
retrieval used, the answer text, and copies of the sources and quotes as the client saw them,
so a past answer reads the same after its documents are deleted. `source_documents` holds the
documents.pk of each source, without a foreign key, to tell which of them still exist.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("pk", sa.UUID(), server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_conversations_owner_updated", "conversations", ["owner_id", "updated_at", "pk"]
    )
    op.create_table(
        "conversation_turns",
        sa.Column("id", sa.BigInteger(), autoincrement=True, primary_key=True),
        sa.Column(
            "conversation_pk",
            sa.UUID(),
            sa.ForeignKey("conversations.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("standalone", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("sources", postgresql.JSONB(), nullable=False),
        sa.Column("source_documents", postgresql.ARRAY(sa.UUID()), nullable=False),
        sa.Column("quotes", postgresql.JSONB(), nullable=False),
        sa.Column("citations", postgresql.JSONB(), nullable=True),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("finish_reason", sa.String(length=32), nullable=False),
        sa.Column("interrupted", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("document_ids", postgresql.JSONB(), nullable=False),
        sa.Column("timings", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_conversation_turns_conversation", "conversation_turns", ["conversation_pk", "id"]
    )


def downgrade() -> None:
    op.drop_table("conversation_turns")
    op.drop_table("conversations")

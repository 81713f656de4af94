"""postings: 8-byte records, chunk ids stored from their block's first

Revision ID: 0009
Revises: 0008

A question over a whole library reads every posting of its terms: at 1M chunks about 8 MB, and
the bytes themselves were most of BM25's time (copying them out of the index, sending them,
decoding them). A record took 14 bytes (chunk id int8, term frequency int2, length int4). Now a
row keeps its block's first chunk id in a column of its own (`first_id`, carried by the primary
key's index beside the records), and a record takes 8: the chunk id less `first_id` (int4),
the term frequency (int2) and the length (int2; a chunk is at most 254 word pieces, and longer
ones are clamped to 32,767). Blocks keep their chunks (at most 32), so rows are converted one by
one, and the downgrade gives 0008's records back.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _table(name: str, compact: bool) -> None:
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("document_pk", sa.UUID(), nullable=False),
        sa.Column("block", sa.SmallInteger(), nullable=False),
    ]
    if compact:
        columns.append(sa.Column("first_id", sa.BigInteger(), nullable=False))
    columns.append(sa.Column("entries", sa.LargeBinary(), nullable=False))
    op.create_table(name, *columns)


def _replace(name: str, include: str) -> None:
    """`name` becomes `postings`, with its primary key (carrying `include`) and document key."""
    op.drop_table("postings")
    op.rename_table(name, "postings")
    op.execute(
        "ALTER TABLE postings ADD CONSTRAINT postings_pkey "
        f"PRIMARY KEY (owner_id, lexeme, document_pk, block) INCLUDE ({include})"
    )
    op.create_foreign_key(
        "postings_document_pk_fkey",
        "postings",
        "documents",
        ["document_pk"],
        ["pk"],
        ondelete="CASCADE",
    )
    op.create_index("ix_postings_document", "postings", ["document_pk"], unique=False)
    op.execute("ALTER TABLE postings SET (autovacuum_vacuum_insert_scale_factor = 0.02)")


# Each record read with its offset `e.at` (1-based): a big-endian integer of N bytes is
# ('x' || encode(substring(...), 'hex'))::bit(8N) cast to an integer type.
_UPGRADE = """
    INSERT INTO postings_compact (owner_id, lexeme, document_pk, block, first_id, entries)
    SELECT p.owner_id, p.lexeme, p.document_pk, p.block, f.first_id,
           (SELECT string_agg(
                       int4send((('x' || encode(substring(p.entries FROM e.at FOR 8), 'hex'))
                                     ::bit(64)::int8 - f.first_id)::int4)
                       || substring(p.entries FROM e.at + 8 FOR 2)
                       || int2send(least(('x' || encode(substring(p.entries FROM e.at + 10 FOR 4),
                                                        'hex'))::bit(32)::int4, 32767)::int2),
                       ''::bytea ORDER BY e.at)
            FROM generate_series(1, length(p.entries), 14) AS e(at))
    FROM postings p
    CROSS JOIN LATERAL (
        SELECT ('x' || encode(substring(p.entries FROM 1 FOR 8), 'hex'))::bit(64)::int8 AS first_id
    ) f
"""
_DOWNGRADE = """
    INSERT INTO postings_wide (owner_id, lexeme, document_pk, block, entries)
    SELECT p.owner_id, p.lexeme, p.document_pk, p.block,
           (SELECT string_agg(
                       int8send(p.first_id + ('x' || encode(substring(p.entries FROM e.at FOR 4),
                                                             'hex'))::bit(32)::int4)
                       || substring(p.entries FROM e.at + 4 FOR 2)
                       || int4send(('x' || encode(substring(p.entries FROM e.at + 6 FOR 2), 'hex'))
                                       ::bit(16)::int4),
                       ''::bytea ORDER BY e.at)
            FROM generate_series(1, length(p.entries), 8) AS e(at))
    FROM postings p
"""


def upgrade() -> None:
    _table("postings_compact", compact=True)
    op.execute(_UPGRADE)
    _replace("postings_compact", "first_id, entries")


def downgrade() -> None:
    _table("postings_wide", compact=False)
    op.execute(_DOWNGRADE)
    _replace("postings_wide", "entries")

"""pages and chunks: what was read and where it sits

Revision ID: 0005
Revises: 0004

pages: `ocr` (the text was recognised from the image), `tables` (how many tables the page has),
`heading` (the section it belongs to: slide title, sheet name, chapter) and `words` (runs of the
page text with their boxes, `[start, end, x0, y0, x1, y1]` in page fractions, origin top-left:
citations highlight with them). chunks: `heading` (the heading a chunk sits under) and `rects`
(where its text sits on its page, one rectangle per line).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pages", sa.Column("ocr", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("pages", sa.Column("tables", sa.Integer(), server_default="0", nullable=False))
    op.add_column("pages", sa.Column("heading", sa.Text(), server_default="", nullable=False))
    op.add_column("pages", sa.Column("words", JSONB(), nullable=True))
    op.add_column("chunks", sa.Column("heading", sa.Text(), server_default="", nullable=False))
    op.add_column("chunks", sa.Column("rects", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("chunks", "rects")
    op.drop_column("chunks", "heading")
    op.drop_column("pages", "words")
    op.drop_column("pages", "heading")
    op.drop_column("pages", "tables")
    op.drop_column("pages", "ocr")

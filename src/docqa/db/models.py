"""The schema, as SQLAlchemy tables. Alembic migrations are written against these."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EMBEDDING_DIM = 384
STATUSES = ("queued", "processing", "ready", "failed")


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "documents"

    pk: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    document_id: Mapped[str] = mapped_column(String(64), nullable=False)
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    blob_key: Mapped[str] = mapped_column(Text, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="queued")
    stage: Mapped[str] = mapped_column(String(32), nullable=False, server_default="queued")
    progress_done: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    percent: Mapped[float] = mapped_column(Float, nullable=False, server_default="0")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # The sum of the chunks' token counts, set when the document becomes ready: with chunk_count,
    # BM25's collection statistics for any set of documents.
    token_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    timings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        UniqueConstraint("owner_id", "document_id", name="uq_documents_owner_document_id"),
        UniqueConstraint("owner_id", "sha256", name="uq_documents_owner_sha256"),
        CheckConstraint(f"status IN {STATUSES!r}", name="ck_documents_status"),
        Index("ix_documents_owner_created", "owner_id", "created_at", "pk"),
    )


class Page(Base):
    __tablename__ = "pages"

    document_pk: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("documents.pk", ondelete="CASCADE"), primary_key=True
    )
    page_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    ocr: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    tables: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    heading: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # [[start, end, x0, y0, x1, y1], ...]: runs of `text` and their boxes in page fractions.
    words: Mapped[list[list[float]] | None] = mapped_column(JSONB)


class Chunk(Base):
    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_pk: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("documents.pk", ondelete="CASCADE"), nullable=False
    )
    # Denormalised so that every retrieval query filters by owner in the same index scan.
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    page_start: Mapped[int] = mapped_column(Integer, nullable=False)
    page_end: Mapped[int] = mapped_column(Integer, nullable=False)
    char_start: Mapped[int] = mapped_column(Integer, nullable=False)
    char_end: Mapped[int] = mapped_column(Integer, nullable=False)
    token_count: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    heading: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # [[x0, y0, x1, y1], ...]: where the chunk's span sits on its page (None: no page image).
    rects: Mapped[list[list[float]] | None] = mapped_column(JSONB)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=False)
    tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', text)", persisted=True)
    )

    __table_args__ = (
        UniqueConstraint("document_pk", "seq", name="uq_chunks_document_seq"),
        Index("ix_chunks_owner_document", "owner_id", "document_pk"),
        Index(
            "ix_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            postgresql_with={"m": 16, "ef_construction": 64},
        ),
    )


class Posting(Base):
    """BM25's inverted index: for one lexeme of one document, a block of at most 32 of the
    chunks holding it, ordered by chunk id: the first one's id in `first_id`, and in `entries` a
    fixed-size record per chunk (its id less `first_id`, the term frequency, the length in word
    pieces: `search.index.RECORD`). Written when the document becomes ready (see
    `search.index.index_terms`). The primary key's index carries `first_id` and `entries`, so
    BM25 reads a lexeme's rows with an index-only scan (migrations 0008 and 0009)."""

    __tablename__ = "postings"

    owner_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True)
    document_pk: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("documents.pk", ondelete="CASCADE"), primary_key=True
    )
    block: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    first_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    entries: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    # Deleting a document deletes its postings through the foreign key: this index finds them.
    __table_args__ = (Index("ix_postings_document", "document_pk"),)


class Owner(Base):
    """Whose documents these are. `documents.owner_id` and `chunks.owner_id` hold this id."""

    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ApiKey(Base):
    """An API key: only the SHA-256 of the secret is kept (see `docqa.auth`)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("owners.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # The first characters of the key, so that a person can tell their keys apart.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        Index("ix_api_keys_owner", "owner_id"),
    )


class RateCounter(Base):
    """Requests one subject (an API key) made in one fixed window of one bucket."""

    __tablename__ = "rate_counters"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Unix time (s) at which the window starts; windows are aligned to multiples of their length.
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")


class StreamLease(Base):
    """One answer stream in progress. Its holder renews `expires_at`; a dead holder's lapses."""

    __tablename__ = "stream_leases"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_stream_leases_subject", "subject", "expires_at"),)


class Conversation(Base):
    """A conversation: the turns asked in it, kept so that follow-ups and a reloaded page find
    them. Its public id is `pk.hex`."""

    __tablename__ = "conversations"

    pk: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (Index("ix_conversations_owner_updated", "owner_id", "updated_at", "pk"),)


class ConversationTurn(Base):
    """One question and its answer as it was given: the sources and quotes are copies, so a
    past answer stays readable after its documents are deleted (`source_documents` tells)."""

    __tablename__ = "conversation_turns"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    conversation_pk: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("conversations.pk", ondelete="CASCADE"), nullable=False
    )
    question: Mapped[str] = mapped_column(Text, nullable=False)
    standalone: Mapped[str] = mapped_column(Text, nullable=False)
    answer: Mapped[str] = mapped_column(Text, nullable=False)
    # The `sources` event's items, and the documents.pk of each (no foreign key: it outlives them).
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    source_documents: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(UUID(as_uuid=True)), nullable=False
    )
    quotes: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    answered: Mapped[bool] = mapped_column(Boolean, nullable=False)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    finish_reason: Mapped[str] = mapped_column(String(32), nullable=False)
    # The client went away before the answer was complete: `answer` is what had been streamed.
    interrupted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    document_ids: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    timings: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (Index("ix_conversation_turns_conversation", "conversation_pk", "id"),)

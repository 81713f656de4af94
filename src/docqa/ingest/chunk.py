"""Cutting pages into chunks that fit the embedding model's window, with exact page attribution.

Chunks never cross a page, so every citation points at one page, and each chunk records its
character span within that page. Sizes are counted in the model's own word pieces: a chunk of
`max_tokens` pieces always fits the 256-piece window, so the model never silently drops text.

A page is cut in regions: running headers and footers (the page's furniture) are left out, prose
is cut at paragraph, sentence or word boundaries with some overlap, and a table is cut between
rows, each later piece starting with the table's header rows again, so that every row can be read
with its column names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from docqa.formats.page import Page, TableSpan
from docqa.ingest.embed import MODEL_MAX_TOKENS, Tokenizer

SENTENCE_END = (".", "?", "!", ";", ":")
# A table header larger than this share of a chunk is not repeated: the rows need the room.
MAX_HEADER_SHARE = 0.5


@dataclass(frozen=True)
class ChunkSpec:
    seq: int
    page_no: int
    char_start: int  # the span of the page the chunk covers
    char_end: int
    text: str  # that span, or a table's header rows and then that span
    token_count: int
    heading: str = ""  # the heading the chunk sits under, if the page has one


@dataclass(frozen=True)
class Piece:
    char_start: int
    char_end: int
    text: str
    tokens: int


def _break_quality(text: str, prev_end: int, next_start: int, prev_piece: str) -> int:
    gap = text[prev_end:next_start]
    if "\n" in gap:
        return 3
    if gap and prev_piece.endswith(SENTENCE_END):
        return 2
    if gap:
        return 1
    return 0


def _best_end(text: str, offsets: list[tuple[int, int]], start: int, end: int) -> int:
    """The best place to end a chunk in (start, end]: a paragraph, sentence or word boundary
    in the last 40% of the window, preferring the latest of the best kind."""
    floor = start + max(1, int((end - start) * 0.6))
    best, best_quality = end, 0
    for i in range(end, floor - 1, -1):
        prev_start, prev_end = offsets[i - 1]
        quality = _break_quality(text, prev_end, offsets[i][0], text[prev_start:prev_end])
        if quality > best_quality:
            best, best_quality = i, quality
            if quality == 3:
                break
    return best


def _word_start(offsets: list[tuple[int, int]], i: int, limit: int) -> int:
    """Move `i` forward to a piece that starts a word (so overlaps do not begin mid-word)."""
    while i < limit and i > 0 and offsets[i][0] == offsets[i - 1][1]:
        i += 1
    return i


def chunk_prose(
    text: str, start: int, end: int, tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> Iterator[Piece]:
    """Chunks of `text[start:end]`, cut at the best boundaries, overlapping by `overlap`."""
    offsets = [(a + start, b + start) for a, b in tokenizer.offsets(text[start:end])]
    n = len(offsets)
    first = 0
    while first < n:
        last = min(first + max_tokens, n)
        if last < n:
            last = _best_end(text, offsets, first, last)
        a, b = offsets[first][0], offsets[last - 1][1]
        yield Piece(a, b, text[a:b], last - first)
        if last >= n:
            return
        first = _word_start(offsets, max(last - overlap, first + 1), last)


def chunk_table(
    text: str, table: TableSpan, tokenizer: Tokenizer, max_tokens: int
) -> Iterator[Piece]:
    """A table's rows in chunks that each start with its header rows (the first one has them
    in its span already). A row too long for a chunk is cut like prose."""
    header = text[table.start : table.header_end].strip("\n")
    header_tokens = tokenizer.count(header) + 1 if header else 0
    if header_tokens > max_tokens * MAX_HEADER_SHARE:
        header, header_tokens = "", 0
    rows: list[tuple[int, int]] = []
    position = table.header_end
    for line in text[table.header_end : table.end].split("\n"):
        if line.strip():
            rows.append((position, position + len(line)))
        position += len(line) + 1

    group: list[tuple[int, int]] = []
    used = header_tokens

    def emit() -> Piece:
        a, b = group[0][0], group[-1][1]
        if a == rows[0][0] and table.header_end > table.start:
            a = table.start  # the first piece reads the header in place
            body = text[a:b]
        else:
            body = f"{header}\n{text[a:b]}" if header else text[a:b]
        return Piece(a, b, body, tokenizer.count(body))

    if not rows:  # a header alone
        if header:
            yield Piece(table.start, table.end, text[table.start : table.end], header_tokens)
        return
    for row in rows:
        cost = tokenizer.count(text[row[0] : row[1]]) + 1
        if group and used + cost > max_tokens:
            yield emit()
            group, used = [], header_tokens
        if header_tokens + cost > max_tokens:
            yield from chunk_prose(text, row[0], row[1], tokenizer, max_tokens, 0)
            continue
        group.append(row)
        used += cost
    if group:
        yield emit()


def _regions(page: Page) -> Iterator[tuple[int, int, TableSpan | None]]:
    """The page's text between its furniture, as prose spans and tables, in order."""
    cuts = sorted(
        [(s, e, None) for s, e in page.furniture] + [(t.start, t.end, t) for t in page.tables],
        key=lambda c: c[0],
    )
    position = 0
    for start, end, table in cuts:
        if start > position:
            yield position, start, None
        if table is not None and start >= position:
            yield start, end, table
        position = max(position, end)
    if position < len(page.text):
        yield position, len(page.text), None


def chunk_page(page: Page, tokenizer: Tokenizer, max_tokens: int, overlap: int) -> Iterator[Piece]:
    """The chunks of one page, in reading order."""
    for start, end, table in _regions(page):
        if table is not None:
            yield from chunk_table(page.text, table, tokenizer, max_tokens)
        elif page.text[start:end].strip():
            yield from chunk_prose(page.text, start, end, tokenizer, max_tokens, overlap)


def heading_at(page: Page, offset: int) -> str:
    """The heading a chunk starting at `offset` sits under."""
    heading = page.heading
    for position, text in page.headings:
        if position > offset:
            break
        heading = text
    return heading


def chunk_pages(
    pages: Iterable[Page], tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> list[ChunkSpec]:
    if max_tokens > MODEL_MAX_TOKENS - 2:
        raise ValueError(f"chunks must leave room for 2 special tokens in {MODEL_MAX_TOKENS}")
    chunks: list[ChunkSpec] = []
    for page in pages:
        for piece in chunk_page(page, tokenizer, max_tokens, overlap):
            chunks.append(
                ChunkSpec(
                    seq=len(chunks),
                    page_no=page.number,
                    char_start=piece.char_start,
                    char_end=piece.char_end,
                    text=piece.text,
                    token_count=piece.tokens,
                    heading=heading_at(page, piece.char_start),
                )
            )
    return chunks

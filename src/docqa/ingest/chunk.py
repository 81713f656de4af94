"""Cutting pages into chunks that fit the embedding model's window, with exact page attribution.

Chunks never cross a page, so every citation points at one page, and each chunk records its
character span within that page. Sizes are counted in the model's own word pieces: a chunk of
`max_tokens` pieces always fits the 256-piece window, so the model never silently drops text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from docqa.ingest.embed import MODEL_MAX_TOKENS, Tokenizer
from docqa.ingest.extract import ExtractedPage

SENTENCE_END = (".", "?", "!", ";", ":")


@dataclass(frozen=True)
class ChunkSpec:
    seq: int
    page_no: int
    char_start: int
    char_end: int
    text: str
    token_count: int


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


def _word_start(text: str, offsets: list[tuple[int, int]], i: int, limit: int) -> int:
    """Move `i` forward to a piece that starts a word (so overlaps do not begin mid-word)."""
    while i < limit and i > 0 and offsets[i][0] == offsets[i - 1][1]:
        i += 1
    return i


def chunk_page(
    page: ExtractedPage, tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> Iterator[tuple[int, int, int]]:
    """(char_start, char_end, tokens) of each chunk of one page."""
    text = page.text
    offsets = tokenizer.offsets(text)
    n = len(offsets)
    start = 0
    while start < n:
        end = min(start + max_tokens, n)
        if end < n:
            end = _best_end(text, offsets, start, end)
        yield offsets[start][0], offsets[end - 1][1], end - start
        if end >= n:
            return
        start = _word_start(text, offsets, max(end - overlap, start + 1), end)


def chunk_pages(
    pages: Iterable[ExtractedPage], tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> list[ChunkSpec]:
    if max_tokens > MODEL_MAX_TOKENS - 2:
        raise ValueError(f"chunks must leave room for 2 special tokens in {MODEL_MAX_TOKENS}")
    chunks: list[ChunkSpec] = []
    for page in pages:
        for char_start, char_end, tokens in chunk_page(page, tokenizer, max_tokens, overlap):
            chunks.append(
                ChunkSpec(
                    seq=len(chunks),
                    page_no=page.page_no,
                    char_start=char_start,
                    char_end=char_end,
                    text=page.text[char_start:char_end],
                    token_count=tokens,
                )
            )
    return chunks

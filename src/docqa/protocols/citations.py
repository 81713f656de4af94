"""Citations as links: the address of the page a source sits on, and OpenAI's `url_citation`
annotations, which locate each `[n]` marker of an answer and say where it points."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

# `[3]`, and the `[1, 2]` some models write for two sources at once.
MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def file_url(base_url: str, document_id: str) -> str:
    """The original file, as uploaded."""
    return f"{base_url.rstrip('/')}/api/v1/documents/{quote(document_id, safe='')}/file"


def page_url(base_url: str, document_id: str, page: int) -> str:
    """The original file at the cited page (browsers' PDF viewers honour `#page=`)."""
    return f"{file_url(base_url, document_id)}#page={page}"


def source_title(source: Mapping[str, Any]) -> str:
    return f"{source['filename']}, page {source['page']}"


def url_citations(
    text: str, sources: Sequence[Mapping[str, Any]], base_url: str
) -> list[dict[str, Any]]:
    """One annotation per source a marker names, in text order. `start_index` and `end_index`
    are the marker's span as string indices (Unicode code points, end exclusive), so
    `text[start_index:end_index]` is the `[n]` itself. Numbers no source has are left alone."""
    by_n = {source["n"]: source for source in sources}
    annotations: list[dict[str, Any]] = []
    for match in MARKER.finditer(text):
        for number in match.group(1).split(","):
            source = by_n.get(int(number))
            if source is None:
                continue
            annotations.append(
                {
                    "type": "url_citation",
                    "url_citation": {
                        "url": page_url(base_url, source["document_id"], source["page"]),
                        "title": source_title(source),
                        "start_index": match.start(),
                        "end_index": match.end(),
                    },
                }
            )
    return annotations

"""Helpers for the ask tests: a strict reading of the SSE answer stream, documents whose facts
sit on known pages, and checks that a citation's page really holds the cited text."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import upload_file, wait_terminal
from tests.pdfgen import make_pdf
from tests.stack import unique_id

# Each page of these documents holds known facts, so a test knows where a citation must point.
OBSERVATORY = [
    "The Harwick Observatory\n\nThe Harwick Observatory was founded in 1911 by the astronomer "
    "Clara Voss. It stands on a granite ridge above the town of Elm Falls. The observatory was "
    "built by stonemasons from the nearby quarry.",
    "Instruments\n\nThe main telescope of the observatory is a 74-inch reflector that was "
    "installed in 1936. Its mirror was ground from Pyrex glass in Pittsburgh. A smaller "
    "refractor is used for public viewing nights.",
    "Funding\n\nIn 2019 the observatory received a grant of 2.4 million dollars to restore its "
    "copper dome. The restoration was finished in the spring of 2022.",
]
FERRY = [
    "The Lindqvist Ferry\n\nThe Lindqvist ferry crosses the Saltmere strait twelve times a day. "
    "The crossing takes forty minutes in calm weather. It carries up to 300 passengers and 60 "
    "cars.",
    "History\n\nThe ferry was built in 1987 at the Kvarner shipyard in Rijeka. It was renamed "
    "after the harbour master Elin Lindqvist in 1995.",
]


@dataclass
class Doc:
    document_id: str
    path: Path
    pages: dict[int, str]  # page number -> the text docqa extracts from it

    def page_holds(self, page: int, text: str) -> bool:
        return fold(text) in fold(self.pages.get(page, ""))


def write_pdf(folder: Path, name: str, pages: list[str]) -> Path:
    """The pages as a PDF, with a line that makes its bytes (and so its sha256) unique."""
    tagged = [*pages[:-1], f"{pages[-1]}\n\nCatalogue reference {uuid.uuid4().hex}."]
    path = folder / f"{name}-{uuid.uuid4().hex[:6]}.pdf"
    path.write_bytes(make_pdf(tagged))
    return path


def extracted_pages(path: Path) -> dict[int, str]:
    """The page texts exactly as docqa's own reader extracts them."""
    from docqa.formats import pdf
    from docqa.formats.page import ReadContext

    return {page.number: page.text for page in pdf.read(path, ReadContext(max_pages=100))}


async def upload_ready(client: httpx.AsyncClient, path: Path, prefix: str = "ask") -> Doc:
    document_id = unique_id(prefix)
    response = await upload_file(client, path, document_id=document_id)
    assert response.status_code == 200, response.text
    doc = await wait_terminal(client, document_id)
    assert doc["status"] == "ready", doc
    return Doc(document_id, path, extracted_pages(path))


def owner_of(database_url: str, document_id: str) -> str:
    """The owner the API filed a document under (the local owner, or an API key's owner)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT owner_id FROM documents WHERE document_id = %s", (document_id,)
        ).fetchone()
    assert row is not None, document_id
    return str(row[0])


def fold(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Asked:
    """One `POST /api/v1/ask`, read to the end."""

    status: int
    headers: httpx.Headers
    raw: str = ""
    events: list[tuple[str, str]] = field(default_factory=list)
    body: dict[str, Any] | None = None  # the JSON error body, when not 200

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    @property
    def deltas(self) -> list[str]:
        return [data for name, data in self.events if name == "message"]

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def one(self, name: str) -> Any:
        found = [json.loads(data) for event, data in self.events if event == name]
        assert len(found) == 1, f"expected one {name} event, got {self.names}"
        return found[0]

    @property
    def sources(self) -> list[dict[str, Any]]:
        sources: list[dict[str, Any]] = self.one("sources")
        return sources

    @property
    def done(self) -> dict[str, Any]:
        done: dict[str, Any] = self.one("done")
        return done

    def citations(self) -> list[tuple[str, dict[str, Any]]]:
        """Each cited stretch of the answer with the source its `[n]` points at."""
        by_n = {s["n"]: s for s in self.sources}
        out = []
        for match in re.finditer(r"(.+?)\s*\[(\d+)\]", self.text, flags=re.DOTALL):
            assert int(match.group(2)) in by_n, f"[{match.group(2)}] is not a source"
            # A list item is shown after a bullet that is not part of the quote.
            out.append((match.group(1).strip().removeprefix("• "), by_n[int(match.group(2))]))
        return out

    def assert_well_formed(self) -> None:
        """The contract's order: sources, then the text, then done last (error just before)."""
        assert self.status == 200, (self.status, self.body)
        assert self.headers["content-type"].startswith("text/event-stream")
        names = self.names
        assert names[0] == "sources", names
        assert names[-1] == "done", names
        middle = names[1:-1]
        if "error" in middle:
            assert middle.index("error") == len(middle) - 1, names
            middle = middle[:-1]
        assert set(middle) <= {"message"}, names


def parse_sse(raw: str) -> list[tuple[str, str]]:
    """WHATWG event-stream parsing, written independently of docqa's own client."""
    events = []
    event, data = "", []
    for line in re.split(r"\r\n|\r|\n", raw):
        if line == "":
            if data and "\n".join(data) != "":
                events.append((event or "message", "\n".join(data)))
            event, data = "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    return events


async def ask(client: httpx.AsyncClient, payload: dict[str, Any]) -> Asked:
    async with client.stream("POST", "/api/v1/ask", json=payload) as response:
        if response.status_code != 200:
            await response.aread()
            return Asked(response.status_code, response.headers, body=response.json())
        raw = "".join([text async for text in response.aiter_text()])
    return Asked(response.status_code, response.headers, raw, parse_sse(raw))


def require_extractive(asked: Asked) -> None:
    """Against a deployment with a model server, extractive-only checks do not apply."""
    if asked.status == 200 and asked.done.get("mode") != "extractive":
        pytest.skip("the server under test answers with a model, not extractively")

"""`POST /api/v1/ask` over real HTTP against the stack's API, which has no model server and so
answers with the built-in extractive answerer: the full flow, citations that hold, several
documents, follow-ups, errors, the wire format, concurrency and the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.asking import (
    OBSERVATORY,
    Doc,
    ask,
    fold,
    owner_of,
    require_extractive,
    upload_ready,
    write_pdf,
)
from tests.stack import Stack, unique_id

CLI = [sys.executable, "-m", "docqa"]
TELESCOPE = "When was the main telescope of the Harwick Observatory installed?"


def assert_citations_hold(asked: Any, docs: list[Doc]) -> None:
    """Every cited sentence is in the passage it cites, and on that passage's page."""
    by_id = {d.document_id: d for d in docs}
    citations = asked.citations()
    assert citations, asked.text
    for sentence, source in citations:
        assert fold(sentence) in fold(source["text"]), (sentence, source)
        doc = by_id.get(source["document_id"])
        if doc is not None:
            assert doc.page_holds(source["page"], sentence), (sentence, source["page"])


async def test_full_flow_upload_wait_ask_stream(client: httpx.AsyncClient, tmp_path: Path) -> None:
    doc = await upload_ready(client, write_pdf(tmp_path, "observatory", OBSERVATORY))
    asked = await ask(client, {"question": TELESCOPE, "document_id": doc.document_id})
    asked.assert_well_formed()
    require_extractive(asked)
    assert len(asked.deltas) >= 3, "the answer arrives piece by piece"
    assert "installed in 1936" in asked.text
    done = asked.done
    assert done["mode"] == "extractive"
    assert done["finish_reason"] == "stop"
    timings = done["timings_ms"]
    assert set(timings) == {"retrieval", "first_token", "total"}
    assert 0 < timings["retrieval"] <= timings["first_token"] <= timings["total"]
    assert set(done["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    sources = asked.sources
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    for source in sources:
        assert set(source) == {
            "n",
            "document_id",
            "filename",
            "page",
            "chunk_id",
            "score",
            "text",
            "rects",
        }
        assert source["rects"], "a PDF passage has its place on the page"
        for rect in source["rects"]:
            assert len(rect) == 4
            assert 0 <= rect[0] < rect[2] <= 1
            assert 0 <= rect[1] < rect[3] <= 1
        assert source["document_id"] == doc.document_id
        assert source["filename"] == doc.path.name
        assert doc.page_holds(source["page"], source["text"])
    cited = dict((s, src["page"]) for s, src in asked.citations())
    assert any("installed in 1936" in s and page == 2 for s, page in cited.items()), cited
    assert_citations_hold(asked, [doc])
    # The exact sentences copied, each with its source, page and place on the page.
    assert done["answered"] is True
    quotes = done["quotes"]
    assert quotes
    assert {q["text"] for q in quotes} == {s for s, _ in asked.citations()}
    for quote in quotes:
        assert quote["page"] == sources[quote["n"] - 1]["page"]
        assert fold(quote["text"]) in fold(sources[quote["n"] - 1]["text"])
        assert quote["rects"]


@pytest.mark.parametrize(
    ("question", "fact", "document", "page"),
    [
        (TELESCOPE, "installed in 1936", "observatory", 2),
        ("Who founded the Harwick Observatory?", "Clara Voss", "observatory", 1),
        ("How much was the grant to restore the dome?", "2.4 million dollars", "observatory", 3),
        ("Where was the Lindqvist ferry built?", "Kvarner shipyard", "ferry", 2),
        ("How many passengers does the ferry carry?", "300 passengers", "ferry", 1),
    ],
)
async def test_citations_point_at_pages_that_hold_the_text(
    client: httpx.AsyncClient,
    ask_docs: dict[str, Doc],
    question: str,
    fact: str,
    document: str,
    page: int,
) -> None:
    docs = list(ask_docs.values())
    asked = await ask(client, {"question": question, "document_ids": [d.document_id for d in docs]})
    asked.assert_well_formed()
    require_extractive(asked)
    assert_citations_hold(asked, docs)
    where = {(src["document_id"], src["page"]) for s, src in asked.citations() if fact in s}
    assert (ask_docs[document].document_id, page) in where, asked.text


async def test_question_over_several_documents(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    obs, ferry = ask_docs["observatory"], ask_docs["ferry"]
    question = (
        "When was the Harwick Observatory founded, and how long does the Lindqvist ferry "
        "crossing take?"
    )
    asked = await ask(
        client, {"question": question, "document_ids": [obs.document_id, ferry.document_id]}
    )
    asked.assert_well_formed()
    assert {s["document_id"] for s in asked.sources} == {obs.document_id, ferry.document_id}
    require_extractive(asked)
    assert_citations_hold(asked, [obs, ferry])
    cited = [(s, src["document_id"], src["page"]) for s, src in asked.citations()]
    assert any("founded in 1911" in s and d == obs.document_id and p == 1 for s, d, p in cited)
    assert any("forty minutes" in s and d == ferry.document_id and p == 1 for s, d, p in cited)
    # Different pages start new paragraphs: a delta with newlines, split over `data:` lines.
    assert "\n\n" in asked.text
    assert "\r\ndata: \r\n" in asked.raw


async def test_follow_up_question_uses_the_history(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    ferry = ask_docs["ferry"]
    ids = [d.document_id for d in ask_docs.values()]
    history = [
        {"role": "user", "content": "How often does the Lindqvist ferry cross the strait?"},
        {"role": "assistant", "content": "It crosses the Saltmere strait twelve times a day. [1]"},
    ]
    asked = await ask(
        client, {"question": "Where was it built?", "document_ids": ids, "history": history}
    )
    asked.assert_well_formed()
    require_extractive(asked)
    assert_citations_hold(asked, list(ask_docs.values()))
    cited = [(s, src["document_id"], src["page"]) for s, src in asked.citations()]
    assert any("Kvarner shipyard" in s and d == ferry.document_id and p == 2 for s, d, p in cited)


async def test_a_new_topic_in_a_conversation_is_judged_by_its_own_words(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    """Without a model, a follow-up is searched with the last question's words in front of its
    own: an unrelated question must not pass for an answerable one because of them."""
    ids = [d.document_id for d in ask_docs.values()]
    history = [
        {"role": "user", "content": "How often does the Lindqvist ferry cross the strait?"},
        {"role": "assistant", "content": "It crosses the Saltmere strait twelve times a day. [1]"},
    ]
    asked = await ask(
        client,
        {"question": "How do I knit a woollen scarf?", "document_ids": ids, "history": history},
    )
    asked.assert_well_formed()
    require_extractive(asked)
    assert asked.done["answered"] is False
    assert asked.text.startswith(
        "I couldn't find this in your documents: they never use the words \u201cknit\u201d, "
    )


async def test_no_document_ids_means_every_ready_document(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    asked = await ask(client, {"question": "Where was the Lindqvist ferry built?", "top_k": 10})
    asked.assert_well_formed()
    assert any("Kvarner shipyard" in s["text"] for s in asked.sources)
    assert len(asked.sources) <= 10


async def test_top_k_bounds_the_sources(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    ids = [d.document_id for d in ask_docs.values()]
    for top_k in (1, 3):
        asked = await ask(client, {"question": TELESCOPE, "document_ids": ids, "top_k": top_k})
        asked.assert_well_formed()
        assert len(asked.sources) == top_k


async def test_unknown_document_is_404(client: httpx.AsyncClient, ask_docs: dict[str, Doc]) -> None:
    missing = unique_id("missing")
    for payload in (
        {"question": TELESCOPE, "document_id": missing},
        {"question": TELESCOPE, "document_ids": [ask_docs["ferry"].document_id, missing]},
    ):
        asked = await ask(client, payload)
        assert asked.status == 404
        assert asked.headers["content-type"] == "application/json"
        assert asked.body is not None
        assert asked.body["code"] == "document_not_found"
        assert missing in asked.body["detail"]
        assert asked.body["request_id"] == asked.headers["x-request-id"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"question": ""},
        {"question": "   \n "},
        {"question": "x" * 2001},
        {"question": 42},
        {"question": "ok?", "top_k": 0},
        {"question": "ok?", "top_k": 51},
        {"question": "ok?", "top_k": "many"},
        {"question": "ok?", "document_id": "no spaces allowed"},
        {"question": "ok?", "document_ids": "not-a-list"},
        {"question": "ok?", "history": [{"role": "system", "content": "obey"}]},
        {"question": "ok?", "history": [{"role": "user"}]},
    ],
)
async def test_invalid_requests_get_422(client: httpx.AsyncClient, payload: dict[str, Any]) -> None:
    asked = await ask(client, payload)
    assert asked.status == 422
    assert asked.body is not None
    assert asked.body["code"] == "invalid_request"
    assert asked.body["detail"]


async def test_a_question_of_2000_characters_is_accepted(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    question = (TELESCOPE + " ") * (2000 // (len(TELESCOPE) + 1))
    asked = await ask(
        client, {"question": question[:2000], "document_id": ask_docs["observatory"].document_id}
    )
    asked.assert_well_formed()


def _insert_document(database_url: str, owner: str, status: str, document_id: str) -> None:
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.execute(
            """INSERT INTO documents (owner_id, document_id, filename, content_type, kind,
                   size_bytes, sha256, blob_key, status)
               VALUES (%s, %s, 'pending.pdf', 'application/pdf', 'pdf', 1, %s, 'none', %s)""",
            (owner, document_id, uuid.uuid4().hex + uuid.uuid4().hex, status),
        )


async def test_document_not_ready_is_409_with_its_status(
    client: httpx.AsyncClient, database_url: str, ask_docs: dict[str, Doc]
) -> None:
    owner = owner_of(database_url, ask_docs["observatory"].document_id)
    # Rows written directly, with no job queued: they stay in this state for the whole test.
    for status in ("queued", "processing", "failed"):
        document_id = unique_id(status)
        _insert_document(database_url, owner, status, document_id)
        try:
            asked = await ask(client, {"question": TELESCOPE, "document_id": document_id})
            assert asked.status == 409, asked.body
            assert asked.body is not None
            assert asked.body["code"] == "document_not_ready"
            assert asked.body["status"] == status
            assert asked.body["document_id"] == document_id
            assert document_id in asked.body["detail"]
        finally:
            await client.delete(f"/api/v1/documents/{document_id}")


async def test_the_wire_format_is_server_sent_events(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    obs = ask_docs["observatory"]
    asked = await ask(client, {"question": TELESCOPE, "document_id": obs.document_id})
    asked.assert_well_formed()
    assert asked.headers["cache-control"] == "no-store"
    assert asked.headers["x-accel-buffering"] == "no"
    assert asked.raw.startswith("event: sources\r\ndata: [")
    for line in asked.raw.split("\r\n"):
        assert line == "" or line.startswith(("event: ", "data: ", ": ping")), line
    # Each event is a block of lines ended by a blank line; the last one is `done`.
    blocks = [b for b in asked.raw.split("\r\n\r\n") if b]
    assert blocks[-1].startswith("event: done\r\ndata: {")
    assert asked.raw.endswith("\r\n\r\n")
    # A normal answer about a text without the word never says "error" (the seed's check).
    assert "error" not in asked.raw.lower()


async def test_twenty_concurrent_asks_all_complete(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    ids = [d.document_id for d in ask_docs.values()]
    questions = [
        TELESCOPE,
        "Who founded the Harwick Observatory?",
        "Where was the Lindqvist ferry built?",
        "How long does the ferry crossing take?",
    ]
    expected = {}
    for question in questions:
        alone = await ask(client, {"question": question, "document_ids": ids})
        alone.assert_well_formed()
        expected[question] = alone.text
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=120) as fresh:
        asked = await asyncio.gather(
            *(ask(fresh, {"question": questions[i % 4], "document_ids": ids}) for i in range(20))
        )
    for i, one in enumerate(asked):
        one.assert_well_formed()
        assert one.done["finish_reason"] == "stop"
        # The extractive answer is deterministic: under load it is the same as alone.
        assert one.text == expected[questions[i % 4]]


def test_cli_streams_the_answer_then_the_sources(stack: Stack, ask_docs: dict[str, Doc]) -> None:
    obs = ask_docs["observatory"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    result = subprocess.run(
        [*CLI, "ask", TELESCOPE, "--doc", obs.document_id, "--server", stack.base_url],
        env=env | {"DOCQA_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer, _, sources = result.stdout.partition("Sources:")
    if "[1]" in answer:
        assert "installed in 1936" in answer
    assert f"{obs.path.name}, page 2 ({obs.document_id})" in sources


def test_cli_reports_an_unknown_document(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    missing = unique_id("missing")
    result = subprocess.run(
        [*CLI, "ask", TELESCOPE, "--doc", missing, "--server", stack.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert missing in result.stderr


def test_cli_without_a_server_runs_the_app_in_process(
    stack: Stack, database_url: str, ask_docs: dict[str, Doc]
) -> None:
    obs = ask_docs["observatory"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    result = subprocess.run(
        [*CLI, "ask", TELESCOPE, "--doc", obs.document_id, "--top-k", "2"],
        env=env | {k: v for k, v in stack.env.items() if k.startswith("DOCQA_")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    answer, _, sources = result.stdout.partition("Sources:")
    assert "installed in 1936." in answer
    assert sources.count(f"({obs.document_id})") == 2


async def test_no_ready_documents_at_all(database_url: str) -> None:
    from docqa.answer.service import document_scope
    from docqa.db.engine import open_database
    from docqa.errors import DocumentNotFound, DocumentNotReady
    from docqa.settings import Settings

    owner = f"lonely-{uuid.uuid4().hex[:8]}"
    db = await open_database(Settings(database_url=database_url), pool_size=1)
    try:
        with pytest.raises(DocumentNotFound):
            await document_scope(db, owner, [])
        _insert_document(database_url, owner, "processing", unique_id("p"))
        _insert_document(database_url, owner, "queued", unique_id("q"))
        with pytest.raises(DocumentNotReady) as raised:
            await document_scope(db, owner, [])
        assert raised.value.extra["statuses"] == {"processing": 1, "queued": 1}
        assert raised.value.extra["status"] == "processing"
    finally:
        import psycopg

        with psycopg.connect(database_url) as conn:
            conn.execute("DELETE FROM documents WHERE owner_id = %s", (owner,))
        await db.close()


@pytest.mark.parametrize(
    ("question", "sentence"),
    [
        (
            "How do I bake sourdough bread at home?",
            "I couldn't find this in your documents: they never use the words \u201cbake\u201d, "
            "\u201csourdough\u201d, \u201cbread\u201d or \u201chome\u201d.",
        ),
        (
            "What is the capital of France?",
            "I couldn't find this in your documents: they never mention France.",
        ),
        (  # words the documents never use, whatever passages come closest
            "asdf qwerty zxcv",
            "I couldn't find this in your documents: they never use the words \u201casdf\u201d, "
            "\u201cqwerty\u201d or \u201czxcv\u201d.",
        ),
        (
            "How many visitors did the Harwick Observatory have in 2031?",
            "I couldn't find this in your documents: they never mention 2031.",
        ),
        (  # on topic, with close passages, about someone the document never names
            "Which telescope did Edwin Hubble install at the Harwick Observatory?",
            "I couldn't find this in your documents: they never mention Edwin Hubble.",
        ),
    ],
)
async def test_extractive_says_when_the_documents_do_not_hold_the_answer(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc], question: str, sentence: str
) -> None:
    """Off-topic, or about a year or a name the documents never mention: said plainly, then the
    closest passages, labelled as such, never passed off as the answer."""
    obs = ask_docs["observatory"]
    asked = await ask(client, {"question": question, "document_id": obs.document_id})
    asked.assert_well_formed()
    require_extractive(asked)
    assert asked.done["answered"] is False
    prefix = sentence + "\n\nThe closest passages I found:\n\n"
    assert asked.text.startswith(prefix)
    # What follows is copied from the sources, each sentence with its citation.
    by_n = {s["n"]: s for s in asked.sources}
    closest = re.findall(r"(.+?)\s*\[(\d+)\]", asked.text[len(prefix) :], flags=re.DOTALL)
    assert closest
    for quoted, n in closest:
        assert fold(quoted.strip().removeprefix("• ")) in fold(by_n[int(n)]["text"])


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("Who founded the Harwik Observatory?", "Clara Voss"),  # mistyped: one letter left out
        ("What did the astronomer Clara Voss found?", "Harwick Observatory"),
        ("Where was the Pyrex mirror of the Harwick telescope ground?", "Pittsburgh"),
    ],
)
async def test_extractive_answers_names_the_documents_hold(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc], question: str, fact: str
) -> None:
    """A name the document holds, even mistyped by a letter, does not stop the answer."""
    obs = ask_docs["observatory"]
    asked = await ask(client, {"question": question, "document_id": obs.document_id})
    asked.assert_well_formed()
    require_extractive(asked)
    assert asked.done["answered"] is True, asked.text
    assert fact in asked.text

"""Owner isolation in answers: another owner's document and chunks, written straight into the
database with real embeddings, never reach a caller's sources, answer or model prompt, even when
they match the question best and share a document id with one of the caller's documents."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from docqa.db.engine import open_database
from docqa.search.index import index_terms
from docqa.settings import Settings
from tests.asking import Doc, ask
from tests.mock_llm import MockLLM


@pytest.fixture(scope="module")
async def foreign(
    database_url: str, local_embedder: Any, ask_docs: dict[str, Doc]
) -> AsyncIterator[Any]:
    tag = uuid.uuid4().hex[:12]
    owner = f"intruder-{tag}"
    texts = [
        f"The Quorvian lighthouse keeper logs every passing ship at nine o'clock ({tag}).",
        f"Quorvian lighthouse records from {tag} list the ships the keeper saw each night.",
    ]
    vectors = local_embedder.embed_documents(texts)
    # One foreign document reuses the public id of one of ours; the other has an id of its own.
    ids = [ask_docs["observatory"].document_id, f"foreign-{tag}"]
    chunk_ids: list[int] = []
    pks: list[uuid.UUID] = []
    with psycopg.connect(database_url) as conn:
        for document_id, text, vector in zip(ids, texts, vectors, strict=True):
            row = conn.execute(
                """INSERT INTO documents (owner_id, document_id, filename, content_type, kind,
                       size_bytes, sha256, blob_key, status, page_count, chunk_count)
                   VALUES (%s, %s, 'secret.pdf', 'application/pdf', 'pdf', 1, %s, 'none',
                       'ready', 1, 1)
                   RETURNING pk""",
                (owner, document_id, uuid.uuid4().hex * 2),
            ).fetchone()
            assert row is not None
            pks.append(row[0])
            chunk = conn.execute(
                """INSERT INTO chunks (document_pk, owner_id, seq, page_start, page_end,
                       char_start, char_end, token_count, text, embedding)
                   VALUES (%s, %s, 0, 1, 1, 0, %s, 20, %s, CAST(%s AS vector))
                   RETURNING id""",
                (row[0], owner, len(text), text, str(vector.tolist())),
            ).fetchone()
            assert chunk is not None
            chunk_ids.append(int(chunk[0]))
    # Their postings and totals, as ingestion writes them, so that BM25 finds them too.
    db = await open_database(Settings(database_url=database_url), pool_size=1)
    try:
        async with db.session() as session, session.begin():
            for pk in pks:
                await index_terms(session, [pk])
    finally:
        await db.close()
    yield {"tag": tag, "owner": owner, "ids": ids, "chunk_ids": set(chunk_ids)}
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM documents WHERE owner_id = %s", (owner,))


QUESTION = "What does the Quorvian lighthouse keeper log every night?"


def assert_nothing_foreign(asked: Any, foreign: dict[str, Any]) -> None:
    asked.assert_well_formed()
    assert asked.sources, "our own documents still answer"
    for source in asked.sources:
        assert source["chunk_id"] not in foreign["chunk_ids"]
        assert foreign["tag"] not in source["text"]
        assert "Quorvian" not in source["text"]
    assert foreign["tag"] not in asked.raw
    # The question's own word may come back only where the answer says no document names it.
    assert "Quorvian" not in asked.text.replace(NEVER_MENTIONED, "")


# The extractive answerer looks the question's names up in the caller's postings only.
NEVER_MENTIONED = "they never mention Quorvian."


async def test_other_owners_chunks_never_reach_the_answer(
    client: httpx.AsyncClient, foreign: dict[str, Any], ask_docs: dict[str, Doc]
) -> None:
    # All of our ready documents: the foreign chunks would be the best match by far.
    asked = await ask(client, {"question": QUESTION, "top_k": 50})
    assert_nothing_foreign(asked, foreign)
    assert NEVER_MENTIONED in asked.text, "another owner's postings were consulted"
    # Our document whose id the other owner also uses: only ours is searched.
    shared = ask_docs["observatory"].document_id
    asked = await ask(client, {"question": QUESTION, "document_id": shared, "top_k": 50})
    assert_nothing_foreign(asked, foreign)
    assert {s["document_id"] for s in asked.sources} == {shared}
    # A document only the other owner has does not exist for us.
    missing = await ask(client, {"question": QUESTION, "document_id": foreign["ids"][1]})
    assert missing.status == 404
    assert missing.body is not None
    assert missing.body["code"] == "document_not_found"


async def test_other_owners_chunks_never_reach_the_model(
    llm_api: str, mock_llm: MockLLM, foreign: dict[str, Any]
) -> None:
    marker = f"zq{uuid.uuid4().hex[:10]}"
    await mock_llm.script({"match": marker, "text": "Nothing about lighthouses [1]."})
    async with httpx.AsyncClient(base_url=llm_api, timeout=60) as client:
        asked = await ask(client, {"question": f"{QUESTION} {marker}", "top_k": 50})
    assert_nothing_foreign(asked, foreign)
    [request] = await mock_llm.requests(marker)
    prompt = str(request["body"]["messages"])
    assert foreign["tag"] not in prompt
    assert "Quorvian lighthouse keeper logs" not in prompt

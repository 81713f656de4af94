"""Conversations over real HTTP: the endpoints, turns stored as they were answered (and as far as
they got when the client left), follow-ups that need no history from the client and match one
sent with it, past answers that outlive their documents, a server restart, and owners kept
apart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.asking import FERRY, OBSERVATORY, Doc, ask, upload_ready, write_pdf
from tests.conftest import LLM_TIMEOUT_S, KeysApi, wait_terminal
from tests.mock_llm import MockLLM
from tests.stack import Stack, start_api


async def _new(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/conversations", json=body or None)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _get(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"].endswith("."), body
    assert body["request_id"]


async def test_create_list_rename_delete(client: httpx.AsyncClient) -> None:
    untitled = await _new(client)
    assert untitled["title"] == ""
    assert untitled["turn_count"] == 0
    assert set(untitled) == {"conversation_id", "title", "turn_count", "created_at", "updated_at"}
    named = await _new(client, title="  Budget   questions ")
    assert named["title"] == "Budget questions"

    # Newest first, a page at a time, each conversation once.
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/conversations", params=params)).json()
        seen += [c["conversation_id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if not cursor or {untitled["conversation_id"], named["conversation_id"]} <= set(seen):
            break
    assert seen[:2] == [named["conversation_id"], untitled["conversation_id"]]
    assert len(seen) == len(set(seen))

    path = f"/api/v1/conversations/{named['conversation_id']}"
    renamed = await client.patch(path, json={"title": "Budget, 2023"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Budget, 2023"
    assert (await _get(client, named["conversation_id"]))["title"] == "Budget, 2023"
    assert (await _get(client, named["conversation_id"]))["turns"] == []

    _error(await client.patch(path, json={"title": "x" * 201}), 422, "invalid_request")
    _error(await client.patch(path, json={"title": "a\u0000b"}), 422, "invalid_request")
    _error(await client.patch(path, json={}), 422, "invalid_request")
    bad_cursor = await client.get("/api/v1/conversations", params={"cursor": "nonsense"})
    _error(bad_cursor, 422, "invalid_request")
    for unknown in (uuid.uuid4().hex, "not-an-id"):
        _error(await client.get(f"/api/v1/conversations/{unknown}"), 404, "conversation_not_found")

    assert (await client.delete(path)).status_code == 204
    _error(await client.get(path), 404, "conversation_not_found")
    _error(await client.delete(path), 404, "conversation_not_found")
    _error(await client.patch(path, json={"title": "t"}), 404, "conversation_not_found")


async def test_turns_are_stored_as_they_were_answered(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    conversation = await _new(client)
    cid = conversation["conversation_id"]
    doc_ids = [ask_docs["ferry"].document_id]
    question = "Where was the Lindqvist ferry built?"
    asked = await ask(
        client, {"question": question, "document_ids": doc_ids, "conversation_id": cid}
    )
    asked.assert_well_formed()
    done = asked.done
    assert done["conversation_id"] == cid
    assert isinstance(done["turn_id"], int)

    stored = await _get(client, cid)
    assert stored["title"] == question, "an untitled conversation is named by its first question"
    assert stored["turn_count"] == 1
    [turn] = stored["turns"]
    assert turn["turn_id"] == done["turn_id"]
    assert turn["question"] == question
    assert turn["standalone_question"] == question
    assert turn["answer"] == asked.text
    assert turn["sources"] == [s | {"deleted": False} for s in asked.sources]
    assert turn["quotes"] == done["quotes"]
    assert turn["answered"] is done["answered"] is True
    assert (turn["mode"], turn["finish_reason"], turn["interrupted"]) == (
        done["mode"],
        "stop",
        False,
    )
    assert turn["document_ids"] == doc_ids
    assert turn["timings_ms"]["first_token"] == done["timings_ms"]["first_token"]

    # A follow-up in the same conversation is rewritten with the turn before.
    follow = "And when was it renamed?"
    again = await ask(client, {"question": follow, "document_ids": doc_ids, "conversation_id": cid})
    again.assert_well_formed()
    turns = (await _get(client, cid))["turns"]
    assert [t["question"] for t in turns] == [question, follow]
    assert "ferry" in turns[1]["standalone_question"].lower()
    assert "renamed" in again.text


async def test_history_and_conversation_id_together_are_refused(client: httpx.AsyncClient) -> None:
    cid = (await _new(client))["conversation_id"]
    history = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."}]
    asked = await ask(client, {"question": "And then?", "conversation_id": cid, "history": history})
    assert asked.status == 422
    assert asked.body is not None
    assert asked.body["code"] == "invalid_request"
    assert "not both" in asked.body["detail"]
    missing = await ask(client, {"question": "Anyone?", "conversation_id": uuid.uuid4().hex})
    assert missing.status == 404
    assert missing.body is not None
    assert missing.body["code"] == "conversation_not_found"


async def test_follow_up_matches_the_same_history_sent_by_the_client(
    client: httpx.AsyncClient, ask_docs: dict[str, Doc]
) -> None:
    """Extractive: the follow-up asked in a conversation and the one sent with the same history
    retrieve the same passages and give the same answer."""
    doc_ids = [d.document_id for d in ask_docs.values()]
    cid = (await _new(client))["conversation_id"]
    first = "Who founded the Harwick Observatory?"
    asked = await ask(client, {"question": first, "document_ids": doc_ids, "conversation_id": cid})
    asked.assert_well_formed()
    follow = "And when was its telescope installed?"
    kept = await ask(client, {"question": follow, "document_ids": doc_ids, "conversation_id": cid})
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": asked.text}]
    sent = await ask(client, {"question": follow, "document_ids": doc_ids, "history": history})
    kept.assert_well_formed()
    sent.assert_well_formed()
    assert [s["chunk_id"] for s in kept.sources] == [s["chunk_id"] for s in sent.sources]
    assert kept.text == sent.text
    assert "1936" in kept.text
    standalone = (await _get(client, cid))["turns"][1]["standalone_question"]
    assert standalone != follow
    assert "observatory" in standalone.lower()


async def test_follow_up_rewrite_is_the_same_with_a_model(
    llm_api: str, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    """With a model, the rewrite request the model receives is the same whether the history
    comes from the conversation or from the client, and the stored standalone question is the
    model's rewrite."""
    marker = uuid.uuid4().hex[:8]
    rewrite = f"When was the main telescope of the Harwick Observatory installed ({marker})?"
    await mock_llm.script({"match": marker, "stream": False, "text": rewrite, "times": 2})
    doc_ids = [ask_docs["observatory"].document_id]
    async with httpx.AsyncClient(base_url=llm_api, timeout=60) as llm:
        cid = (await _new(llm))["conversation_id"]
        first = "Who founded the Harwick Observatory?"
        one = await ask(llm, {"question": first, "document_ids": doc_ids, "conversation_id": cid})
        one.assert_well_formed()
        follow = f"And when was its telescope installed? ({marker})"
        body = {"question": follow, "document_ids": doc_ids}
        kept = await ask(llm, body | {"conversation_id": cid})
        history = [{"role": "user", "content": first}, {"role": "assistant", "content": one.text}]
        sent = await ask(llm, body | {"history": history})
        kept.assert_well_formed()
        sent.assert_well_formed()
        turns = (await _get(llm, cid))["turns"]
    assert turns[0]["answer"] == one.text
    rewrites = [r for r in await mock_llm.requests(marker) if not r["stream"]]
    assert len(rewrites) == 2, rewrites
    assert rewrites[0]["body"]["messages"] == rewrites[1]["body"]["messages"]
    assert turns[1]["standalone_question"] == rewrite
    assert [s["chunk_id"] for s in kept.sources] == [s["chunk_id"] for s in sent.sources]


async def test_a_client_that_leaves_leaves_an_interrupted_turn(
    llm_api: str, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    marker = uuid.uuid4().hex[:8]
    words = [f"w{i} " for i in range(200)]
    await mock_llm.script({"match": marker, "stream": True, "tokens": words, "delay_s": 0.05})
    body = {"question": f"Tell me slowly ({marker})", "document_id": ask_docs["ferry"].document_id}
    async with httpx.AsyncClient(base_url=llm_api, timeout=60) as llm:
        cid = (await _new(llm))["conversation_id"]
        got = ""
        async with llm.stream("POST", "/api/v1/ask", json=body | {"conversation_id": cid}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: w"):
                    got += line.removeprefix("data: ")
                if got.count("w") >= 5:
                    break  # leave part-way
        deadline = time.monotonic() + 15 + LLM_TIMEOUT_S
        turns: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not turns:
            turns = (await _get(llm, cid))["turns"]
            await asyncio.sleep(0.2)
    assert turns, "the interrupted turn was stored"
    [turn] = turns
    assert turn["interrupted"] is True
    assert turn["finish_reason"] == "cancelled"
    assert turn["answer"].startswith("w0 w1 w2 w3 w4")
    assert len(turn["answer"].split()) < 200


async def test_deleted_documents_leave_past_answers_readable(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    doc = await upload_ready(client, write_pdf(tmp_path, "ferry", FERRY), "conv-del")
    other = await upload_ready(client, write_pdf(tmp_path, "obs", OBSERVATORY), "conv-keep")
    cid = (await _new(client))["conversation_id"]
    body = {
        "question": "How many passengers does the ferry carry?",
        "document_ids": [doc.document_id, other.document_id],
        "conversation_id": cid,
    }
    asked = await ask(client, body)
    asked.assert_well_formed()
    assert {s["document_id"] for s in asked.sources} == {doc.document_id, other.document_id}
    assert (await client.delete(f"/api/v1/documents/{doc.document_id}")).status_code == 204

    [turn] = (await _get(client, cid))["turns"]
    assert turn["answer"] == asked.text
    assert "300 passengers" in turn["answer"]
    for source, streamed in zip(turn["sources"], asked.sources, strict=True):
        assert source["text"] == streamed["text"]
        assert source["deleted"] is (source["document_id"] == doc.document_id)
    # The conversation goes on with the documents that are left.
    follow = {"question": "Who founded the observatory?", "conversation_id": cid}
    later = await ask(client, follow | {"document_id": other.document_id})
    later.assert_well_formed()
    assert len((await _get(client, cid))["turns"]) == 2


async def test_conversations_survive_a_server_restart(
    stack: Stack, ask_docs: dict[str, Doc], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not stack.local:
        pytest.skip("needs an API the test can restart (not available with DOCQA_TEST_BASE_URL)")
    logs = tmp_path_factory.mktemp("restart-logs")
    proc, url = start_api(stack.env, logs, name="api-restart")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            cid = (await _new(c, title="Before the restart"))["conversation_id"]
            body = {"question": "Where was the Lindqvist ferry built?", "conversation_id": cid}
            asked = await ask(c, body | {"document_id": ask_docs["ferry"].document_id})
            asked.assert_well_formed()
            before = await _get(c, cid)
    finally:
        proc.stop()
    proc, url = start_api(stack.env, logs, name="api-restart")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            after = await _get(c, cid)
            listed = (await c.get("/api/v1/conversations", params={"limit": 200})).json()
    finally:
        proc.stop()
    assert after == before
    assert after["turns"][0]["answer"] == asked.text
    assert cid in {c["conversation_id"] for c in listed["conversations"]}


async def test_one_owner_cannot_reach_anothers_conversations(
    keys_api: KeysApi, tmp_path: Path
) -> None:
    alice_key, bob_key = await keys_api.new_key("alice"), await keys_api.new_key("bob")
    note = tmp_path / f"{uuid.uuid4().hex[:8]}-harbour.md"
    note.write_text(f"# Harbour\n\nThe harbour light is lit at dusk ({uuid.uuid4().hex}).\n")
    async with keys_api.client(alice_key) as alice, keys_api.client(bob_key) as bob:
        with note.open("rb") as f:
            uploaded = await alice.post("/api/v1/upload", files={"file": (note.name, f)})
        assert uploaded.status_code == 200, uploaded.text
        assert (await wait_terminal(alice, uploaded.json()["document_id"]))["status"] == "ready"
        cid = (await _new(alice, title="Alice's"))["conversation_id"]
        asked = await ask(
            alice, {"question": "When is the harbour light lit?", "conversation_id": cid}
        )
        asked.assert_well_formed()

        listed = (await bob.get("/api/v1/conversations")).json()["conversations"]
        assert cid not in {c["conversation_id"] for c in listed}
        path = f"/api/v1/conversations/{cid}"
        _error(await bob.get(path), 404, "conversation_not_found")
        _error(await bob.patch(path, json={"title": "mine"}), 404, "conversation_not_found")
        _error(await bob.delete(path), 404, "conversation_not_found")
        stolen = await ask(bob, {"question": "When is the light lit?", "conversation_id": cid})
        assert stolen.status == 404
        assert stolen.body is not None
        assert stolen.body["code"] == "conversation_not_found"

        mine = await _get(alice, cid)
        assert mine["title"] == "Alice's"
        assert len(mine["turns"]) == 1
        assert json.dumps(mine).count("harbour light") >= 1

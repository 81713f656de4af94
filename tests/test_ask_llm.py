"""`POST /api/v1/ask` with a model server: a second API process on the same database, pointed at
the scriptable mock (`tests/mock_llm.py`), which records every request it gets. The full flow,
what the model is shown, follow-ups, every way the model server can fail, a client that goes
away, and twenty answers streaming at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.asking import FERRY, Asked, Doc, ask, upload_ready, write_pdf
from tests.conftest import LLM_TIMEOUT_S
from tests.mock_llm import MockLLM
from tests.stack import Stack, free_port, start_api

pytestmark = pytest.mark.usefixtures("llm_api")


@pytest.fixture
async def llm(llm_api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=llm_api, timeout=60) as client:
        yield client


def marker() -> str:
    """A word to put in a question so that a scripted behaviour matches only that request."""
    return f"zq{uuid.uuid4().hex[:10]}"


def user_prompt(request: dict[str, Any]) -> str:
    content: str = request["body"]["messages"][-1]["content"]
    return content


async def test_full_flow_with_the_model(
    llm: httpx.AsyncClient, mock_llm: MockLLM, tmp_path: Path
) -> None:
    doc = await upload_ready(llm, write_pdf(tmp_path, "ferry", FERRY), "ferry")
    tag = marker()
    reply = "The ferry was built in 1987 [1].\nIt was built at the Kvarner shipyard [1].\n\nDone."
    await mock_llm.script({"match": tag, "text": reply, "delay_s": 0.01})
    question = f"Where and when was the Lindqvist ferry built? {tag}"
    asked = await ask(llm, {"question": question, "document_id": doc.document_id})
    asked.assert_well_formed()
    # Joining the deltas gives the model's text exactly, newlines included.
    assert asked.text == reply
    assert len(asked.deltas) >= 10
    assert "\r\ndata: \r\n" in asked.raw, "a blank line of the answer is its own data: line"
    done = asked.done
    assert done["mode"] == "llm"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(reply.split())
    assert 0 < done["timings_ms"]["first_token"] <= done["timings_ms"]["total"]
    sources = asked.sources
    assert {s["document_id"] for s in sources} == {doc.document_id}
    for source in sources:
        assert doc.page_holds(source["page"], source["text"])
    # What the model was shown: the instructions, then sources numbered as the sources event.
    [request] = await mock_llm.requests(tag)
    body = request["body"]
    assert body["model"] == "mock-model"
    assert body["stream"] is True
    assert body["messages"][0]["role"] == "system"
    assert "[1]" in body["messages"][0]["content"]
    prompt = user_prompt(request)
    for source in sources:
        block = f"[{source['n']}] {source['filename']}, page {source['page']}\n"
        assert block + source["text"].strip() in prompt
    assert prompt.index("[1] ") < prompt.index(f"Question: {question}")
    assert request["outcome"] == "completed"


async def test_the_prompt_keeps_within_the_context_budget(
    llm: httpx.AsyncClient, mock_llm: MockLLM, tmp_path: Path
) -> None:
    from docqa.ingest.embed import Tokenizer

    # 60 pages of about 180 word pieces each. A page gives at most one source, so 60 passages
    # compete for 50 places (top_k), and they hold far more than the 3000 pieces allowed.
    sentence = "The survey counted {n} herons nesting along the northern shore of lake {w}. "
    pages = [
        "".join(sentence.format(n=p * 7 + i, w=f"w{p}x{i}") for i in range(9)) for p in range(60)
    ]
    doc = await upload_ready(llm, write_pdf(tmp_path, "herons", pages), "herons")
    tag = marker()
    await mock_llm.script({"match": tag, "text": "Herons [1]."})
    asked = await ask(
        llm,
        {"question": f"How many herons nest? {tag}", "document_id": doc.document_id, "top_k": 50},
    )
    asked.assert_well_formed()
    sources = asked.sources
    tokenizer = Tokenizer()
    used = sum(tokenizer.count(s["text"]) for s in sources)
    assert used <= 3000, used
    assert 10 <= len(sources) < 50, "the budget, not top_k, bounded the sources"
    prompt = user_prompt((await mock_llm.requests(tag))[0])
    assert f"[{len(sources)}] " in prompt
    assert f"[{len(sources) + 1}] " not in prompt


async def test_follow_up_is_rewritten_by_the_model_before_retrieval(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    obs = ask_docs["observatory"]
    tag = marker()
    history = [
        {"role": "user", "content": "What happened to the copper dome of the observatory?"},
        {"role": "assistant", "content": f"It was restored [1]. ({tag})"},
    ]
    # The rewrite names the grant, which only page 3 mentions and which the follow-up as asked
    # ("Where was it built?") would never find first: so the top source shows which was used.
    rewritten = "How much was the grant to restore the copper dome of the Harwick Observatory?"
    await mock_llm.script(
        {"match": tag, "stream": False, "text": f"Standalone question: {rewritten}"},
        {"match": tag, "stream": True, "text": "It cost 2.4 million dollars [1]."},
    )
    ids = [d.document_id for d in ask_docs.values()]
    payload = {"question": "Where was it built?", "document_ids": ids, "history": history}
    asked = await ask(llm, payload | {"top_k": 1})
    asked.assert_well_formed()
    assert asked.text == "It cost 2.4 million dollars [1]."
    [top] = asked.sources
    assert (top["document_id"], top["page"]) == (obs.document_id, 3)
    rewrite, answer = await mock_llm.requests(tag)
    assert rewrite["body"]["stream"] is False
    assert "Where was it built?" in user_prompt(rewrite)
    assert history[0]["content"] in user_prompt(rewrite)
    # The model sees the conversation as turns, then the sources and the question as asked.
    messages = answer["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == history[0]["content"]
    assert user_prompt(answer).endswith("Question: Where was it built?")


async def test_model_server_error_before_streaming_is_502(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    tag = marker()
    await mock_llm.script({"match": tag, "status": 500})
    asked = await ask(
        llm,
        {"question": f"Who founded it? {tag}", "document_id": ask_docs["observatory"].document_id},
    )
    assert asked.status == 502
    assert asked.headers["content-type"] == "application/json"
    assert asked.body is not None
    assert asked.body["code"] == "model_error"
    assert asked.body["request_id"] == asked.headers["x-request-id"]


async def test_model_server_too_slow_to_answer_is_503(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    tag = marker()
    await mock_llm.script({"match": tag, "hang_s": LLM_TIMEOUT_S + 5})
    started = time.monotonic()
    asked = await ask(
        llm,
        {"question": f"Who founded it? {tag}", "document_id": ask_docs["observatory"].document_id},
    )
    elapsed = time.monotonic() - started
    assert asked.status == 503
    assert asked.body is not None
    assert asked.body["code"] == "model_timeout"
    assert LLM_TIMEOUT_S <= elapsed < LLM_TIMEOUT_S + 4
    [request] = await mock_llm.requests(tag)
    assert request["outcome"] == "cancelled", "docqa hung up on the slow request"


async def stream_failure(
    llm: httpx.AsyncClient, mock_llm: MockLLM, doc: Doc, **behaviour: Any
) -> Asked:
    tag = marker()
    await mock_llm.script({"match": tag, "text": "one two three four five six [1].", **behaviour})
    asked = await ask(llm, {"question": f"Who founded it? {tag}", "document_id": doc.document_id})
    asked.assert_well_formed()
    assert asked.names[-2] == "error", asked.names
    assert asked.done["finish_reason"] == "error"
    return asked


async def test_model_stalling_mid_stream_ends_with_an_error_event(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    started = time.monotonic()
    asked = await stream_failure(
        llm, mock_llm, ask_docs["observatory"], stall_after=2, stall_s=LLM_TIMEOUT_S + 10
    )
    assert asked.text == "one two "
    assert asked.one("error")["code"] == "model_timeout"
    assert time.monotonic() - started < LLM_TIMEOUT_S + 4


async def test_model_dying_mid_stream_ends_with_an_error_event(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    asked = await stream_failure(llm, mock_llm, ask_docs["observatory"], die_after=3)
    assert asked.text == "one two three "
    error = asked.one("error")
    assert error["code"] == "model_unavailable"
    assert error["detail"]


async def test_model_reporting_an_error_mid_stream_ends_with_an_error_event(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    asked = await stream_failure(llm, mock_llm, ask_docs["observatory"], error_after=1)
    assert asked.text == "one "
    assert asked.one("error")["code"] == "model_error"


async def test_client_disconnect_cancels_the_model_request(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    tag = marker()
    await mock_llm.script({"match": tag, "text": "word " * 100, "delay_s": 0.2})
    payload = {
        "question": f"Who founded it? {tag}",
        "document_id": ask_docs["observatory"].document_id,
    }
    deltas = 0
    async with llm.stream("POST", "/api/v1/ask", json=payload) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: word"):
                deltas += 1
                if deltas == 2:
                    break
    left = time.time()  # leaving the block closed the connection
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [request] = await mock_llm.requests(tag)
        if request["outcome"] != "open":
            break
        await asyncio.sleep(0.05)
    assert request["outcome"] == "cancelled"
    assert request["ended"] - left < 1.0, "the model request was cancelled within a second"
    assert request["tokens_sent"] < 10


async def test_twenty_concurrent_asks_stream_at_once(
    llm: httpx.AsyncClient, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    tags = [marker() for _ in range(20)]
    replies = {
        t: f"Answer for {t}: " + " ".join(f"w{i}" for i in range(15)) + " [1]." for t in tags
    }
    await mock_llm.script(*({"match": t, "text": replies[t], "delay_s": 0.25} for t in tags))
    ids = [d.document_id for d in ask_docs.values()]
    async with httpx.AsyncClient(base_url=str(llm.base_url), timeout=120) as client:
        asked = await asyncio.gather(
            *(ask(client, {"question": f"Who founded it? {t}", "document_ids": ids}) for t in tags)
        )
    for tag, one in zip(tags, asked, strict=True):
        one.assert_well_formed()
        assert one.text == replies[tag]
        assert one.done["finish_reason"] == "stop"
    requests = [r for t in tags for r in await mock_llm.requests(t)]
    assert len(requests) == 20
    assert all(r["outcome"] == "completed" for r in requests)
    # Every stream was still running when the last one started: they streamed at once.
    assert max(r["started"] for r in requests) < min(r["ended"] for r in requests)


@pytest.fixture(scope="module")
def dead_model_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API whose model server address has nothing listening on it."""
    env = stack.env | {
        "DOCQA_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "DOCQA_LLM_MAX_RETRIES": "0",
    }
    proc, url = start_api(env, tmp_path_factory.mktemp("logs-dead-model"), name="api-dead-model")
    try:
        yield url
    finally:
        proc.stop()


@pytest.mark.slow
async def test_model_server_down_is_503(dead_model_api: str, ask_docs: dict[str, Doc]) -> None:
    async with httpx.AsyncClient(base_url=dead_model_api, timeout=60) as client:
        asked = await ask(
            client,
            {"question": "Who founded it?", "document_id": ask_docs["observatory"].document_id},
        )
    assert asked.status == 503
    assert asked.headers["content-type"] == "application/json"
    assert asked.body is not None
    assert asked.body["code"] == "model_unavailable"
    assert "model server" in asked.body["detail"]

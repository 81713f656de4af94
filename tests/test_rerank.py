"""Reranking: the `/rerank` client against the mock rerank server (its own process, both API
shapes), an API process configured with it (sources reordered; a server that is down, slow or
answers garbage leaves the fused order, one warning, and an answer that still streams), and
`docqa eval` reporting `hybrid+rerank`. The pure parts (answer parsing, reordering) are unit
tests at the end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from docqa.search.rerank import (
    HttpReranker,
    MalformedReply,
    parse_scores,
    request_body,
    rerank_hits,
)
from docqa.search.retrieve import Hit
from tests.asking import Asked, ask, fold
from tests.conftest import _log_dir
from tests.mock_rerank import MockRerankClient, overlap
from tests.stack import Proc, Stack, free_port, start_api
from tests.test_eval import QUERIES, run_eval, write_beir

# A key that must reach the rerank server as a bearer token and never reach a log.
API_KEY = f"rk-{uuid.uuid4().hex}"
TIMEOUT_S = 2.0
QUESTION = "When was the Harwick Observatory founded, and by whom?"


@pytest.fixture(autouse=True)
async def fresh_mock(mock_rerank: MockRerankClient) -> None:
    await mock_rerank.reset()


def _api(stack: Stack, name: str, factory: pytest.TempPathFactory, **env: str) -> Iterator[Any]:
    if not stack.local:
        pytest.skip("needs an API the tests configure (not available with DOCQA_TEST_BASE_URL)")
    proc, url = start_api(stack.env | env, _log_dir(factory), name=name)
    try:
        # A first ask (on `ask_docs`) loads the embedding model; the tests time the ones after.
        response = httpx.post(f"{url}/api/v1/ask", json={"question": "warm up"}, timeout=300)
        assert response.status_code == 200, response.text
        yield proc, url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def rerank_api(
    stack: Stack,
    ask_docs: dict[str, Any],
    mock_rerank: MockRerankClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Proc, str]]:
    """An API process reranking with the mock (Cohere's shape, a model name and a key)."""
    yield from _api(
        stack,
        f"api-rerank-{uuid.uuid4().hex[:6]}",
        tmp_path_factory,
        DOCQA_RERANK_BASE_URL=mock_rerank.url,
        DOCQA_RERANK_MODEL="mock-reranker",
        DOCQA_RERANK_API_KEY=API_KEY,
        DOCQA_RERANK_TIMEOUT_S=str(TIMEOUT_S),
    )


@pytest.fixture(scope="module")
def dead_rerank_api(
    stack: Stack, ask_docs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proc, str]]:
    """An API process whose rerank server (TEI's shape) is down: nothing listens on its port."""
    yield from _api(
        stack,
        f"api-rerank-down-{uuid.uuid4().hex[:6]}",
        tmp_path_factory,
        DOCQA_RERANK_BASE_URL=f"http://127.0.0.1:{free_port()}",
        DOCQA_RERANK_API="tei",
        DOCQA_RERANK_API_KEY=API_KEY,
    )


async def _ask(url: str, document_id: str, question: str = QUESTION) -> Asked:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        asked = await ask(client, {"question": question, "document_id": document_id})
    asked.assert_well_formed()
    assert asked.done["finish_reason"] == "stop", asked.done
    assert asked.text, "the answer still streams"
    return asked


def _logged(proc: Proc) -> list[dict[str, Any]]:
    lines = proc.log_path.read_text(errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("logger") == "docqa.search.rerank"]


def _warnings(proc: Proc) -> list[dict[str, Any]]:
    return [e for e in _logged(proc) if e["level"] == "warning"]


def _order(asked: Asked) -> list[tuple[int, float]]:
    return [(s["chunk_id"], s["score"]) for s in asked.sources]


# --- through the API ------------------------------------------------------------------------------


async def test_reranker_reorders_sources(
    stack: Stack,
    ask_docs: dict[str, Any],
    mock_rerank: MockRerankClient,
    rerank_api: tuple[Proc, str],
) -> None:
    doc = ask_docs["observatory"].document_id
    fused = await _ask(stack.base_url, doc)
    assert "1911" in fused.sources[0]["text"]  # the founding page leads without reranking
    await mock_rerank.script({"match": "Harwick", "prefer": "copper dome"})
    reranked = await _ask(rerank_api[1], doc)
    # The same passages, led by the one the reranker prefers, with the reranker's scores.
    assert {s["chunk_id"] for s in reranked.sources} == {s["chunk_id"] for s in fused.sources}
    assert "copper dome" in fold(reranked.sources[0]["text"])
    assert reranked.sources[0]["page"] == 3
    scores = [s["score"] for s in reranked.sources]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] >= 1.0
    [seen] = await mock_rerank.requests()
    assert seen["path"] == "/rerank"
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = seen["body"]
    assert body["model"] == "mock-reranker"
    assert body["query"] == QUESTION
    assert body["top_n"] == len(body["documents"]) == len(fused.sources)
    assert not _warnings(rerank_api[0])
    started = [e["msg"] for e in _logged(rerank_api[0]) if e["level"] == "info"]
    assert started == [f"reranking with {mock_rerank.url}/rerank"]


async def test_mcp_search_is_reranked_like_answers(
    ask_docs: dict[str, Any], mock_rerank: MockRerankClient, rerank_api: tuple[Proc, str]
) -> None:
    """The MCP `search_documents` tool gives the passages in the reranker's order, as `ask`."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    doc = ask_docs["observatory"].document_id
    await mock_rerank.script({"match": "Harwick", "prefer": "copper dome"})
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(streamable_http_client(f"{rerank_api[1]}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool(
            "search_documents", {"query": QUESTION, "document_ids": [doc]}
        )
    assert not result.is_error, result
    assert result.structured_content is not None
    passages = result.structured_content["passages"]
    assert "copper dome" in fold(passages[0]["text"])
    assert passages[0]["score"] >= 1.0  # the reranker's score, not the fused one
    [seen] = await mock_rerank.requests()
    assert seen["body"]["query"] == QUESTION


async def test_unscripted_mock_ranks_by_word_overlap(
    ask_docs: dict[str, Any], rerank_api: tuple[Proc, str]
) -> None:
    doc = ask_docs["observatory"]
    question = "Where was the Pyrex mirror of the main telescope ground?"
    reranked = await _ask(rerank_api[1], doc.document_id, question)
    overlaps = [overlap(question, s["text"]) for s in reranked.sources]
    assert [s["score"] for s in reranked.sources] == overlaps
    assert reranked.sources[0]["page"] == 2


async def test_down_reranker_keeps_fused_order(
    stack: Stack, ask_docs: dict[str, Any], dead_rerank_api: tuple[Proc, str]
) -> None:
    proc, url = dead_rerank_api
    doc = ask_docs["observatory"].document_id
    before = len(_warnings(proc))
    degraded = await _ask(url, doc)
    assert _order(degraded) == _order(await _ask(stack.base_url, doc))
    new = _warnings(proc)[before:]
    assert len(new) == 1, new
    assert new[0]["level"] == "warning"
    assert "cannot be reached" in new[0]["msg"]
    assert new[0]["rerank_url"].endswith("/rerank")
    assert API_KEY not in proc.log_path.read_text()


async def test_slow_reranker_times_out_and_keeps_fused_order(
    stack: Stack,
    ask_docs: dict[str, Any],
    mock_rerank: MockRerankClient,
    rerank_api: tuple[Proc, str],
) -> None:
    proc, url = rerank_api
    doc = ask_docs["observatory"].document_id
    await mock_rerank.script({"hang_s": 10})
    before = len(_warnings(proc))
    degraded = await _ask(url, doc)
    assert _order(degraded) == _order(await _ask(stack.base_url, doc))
    # The ask waited for the reranker's timeout, not for the server.
    assert TIMEOUT_S * 1000 * 0.9 <= degraded.done["timings_ms"]["retrieval"] < 8000
    new = _warnings(proc)[before:]
    assert [e["msg"] for e in new] == [
        "reranking skipped, the fused order is kept: it did not answer within 2 s"
    ]
    # docqa hung up: the rerank server sees the request cancelled.
    for _ in range(50):
        [seen] = await mock_rerank.requests()
        if seen["outcome"] == "cancelled":
            break
        await asyncio.sleep(0.1)
    assert seen["outcome"] == "cancelled"


GARBAGE = [
    ({"status": 503}, "it answered HTTP 503"),
    ({"body": "<html>not json"}, "its answer is not JSON"),
    ({"json": {"data": []}}, "neither a `results` list nor a list of scores"),
    ({"json": {"results": [{"index": 7, "relevance_score": 1.0}]}}, "index 7 names no text"),
    ({"json": {"results": [{"index": 0, "relevance_score": "high"}]}}, "is not a finite number"),
    ({"json": {"results": [{"index": 0, "relevance_score": 0.5}]}}, "texts without a score"),
    ({"drop": True}, "the connection failed (RemoteProtocolError)"),
]


@pytest.mark.parametrize(("behaviour", "reason"), GARBAGE, ids=[r for _, r in GARBAGE])
async def test_garbage_from_reranker_keeps_fused_order(
    stack: Stack,
    ask_docs: dict[str, Any],
    mock_rerank: MockRerankClient,
    rerank_api: tuple[Proc, str],
    behaviour: dict[str, Any],
    reason: str,
) -> None:
    proc, url = rerank_api
    doc = ask_docs["ferry"].document_id
    question = "How long does the ferry crossing take?"
    await mock_rerank.script(behaviour)
    before = len(_warnings(proc))
    degraded = await _ask(url, doc, question)
    assert _order(degraded) == _order(await _ask(stack.base_url, doc, question))
    new = _warnings(proc)[before:]
    assert len(new) == 1, new
    assert reason in new[0]["msg"]
    assert API_KEY not in proc.log_path.read_text()


# --- the client against the mock, both shapes ----------------------------------------------------


TEXTS = [
    "Bread rises because yeast ferments sugar.",
    "The ferry crosses the strait twelve times a day.",
    "A telescope mirror was ground from Pyrex glass.",
]


@pytest.mark.parametrize("api", ["cohere", "tei"])
async def test_client_reads_both_shapes(mock_rerank: MockRerankClient, api: str) -> None:
    reranker = HttpReranker(mock_rerank.url + "/v1", api=api, timeout_s=5)  # type: ignore[arg-type]
    try:
        scores = await reranker.rerank("how often does the ferry cross the strait", TEXTS)
        assert await reranker.rerank("anything", []) == []
    finally:
        await reranker.aclose()
    assert scores is not None
    assert scores.index(max(scores)) == 1
    assert scores[1] == overlap("how often does the ferry cross the strait", TEXTS[1])
    [seen] = await mock_rerank.requests()  # no request for no texts
    assert seen["path"] == "/v1/rerank"
    assert "authorization" not in seen["headers"]
    if api == "tei":
        assert seen["body"] == {"query": seen["body"]["query"], "texts": TEXTS, "truncate": True}
    else:
        assert "model" not in seen["body"]
        assert seen["body"]["documents"] == TEXTS


async def test_client_never_raises_on_a_bad_base_url(caplog: pytest.LogCaptureFixture) -> None:
    for base in ("localhost:1", "http://bad host:1", "http://user:pw@127.0.0.1:1/?key=k"):
        reranker = HttpReranker(base, api_key=API_KEY, timeout_s=1)
        try:
            assert await reranker.rerank("q", ["a"]) is None
        finally:
            await reranker.aclose()
        assert reranker.failures == 1
    text = caplog.text
    assert text.count("reranking skipped") == 3
    assert API_KEY not in text
    assert "pw" not in text
    assert "key=k" not in text


# --- docqa eval -----------------------------------------------------------------------------------


async def test_eval_reports_hybrid_rerank(tmp_path: Path, mock_rerank: MockRerankClient) -> None:
    await mock_rerank.script({"match": "volcanoes", "status": 500})
    folder = write_beir(tmp_path / "tiny-beir")
    result = await asyncio.to_thread(
        run_eval,
        folder,
        tmp_path / "data",
        "--json",
        DOCQA_RERANK_BASE_URL=mock_rerank.url + "/v2",
        DOCQA_RERANK_TIMEOUT_S="30",  # a loaded machine must not fail more than the scripted one
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["modes"]) == ["lexical", "vector", "hybrid", "hybrid+rerank"]
    assert set(report["timings"]["query_ms"]) == set(report["modes"])
    reranked = report["modes"]["hybrid+rerank"]
    assert sorted(reranked) == ["ndcg@10", "recall@100"]
    assert reranked["ndcg@10"] >= 0.8
    # One query's rerank failed (scripted): counted, warned about once, and scored as hybrid.
    assert report["rerank"]["failures"] == 1
    assert report["rerank"]["url"] == mock_rerank.url + "/v2/rerank"
    assert result.stderr.count("reranking skipped") == 1, result.stderr
    assert "it answered HTTP 500" in result.stderr
    assert len(await mock_rerank.requests()) == len(QUERIES)


# --- unit tests: parsing and reordering -----------------------------------------------------------


def test_request_body_in_both_shapes() -> None:
    assert request_body("tei", "m", "q", ["a", "b"]) == {
        "query": "q",
        "texts": ["a", "b"],
        "truncate": True,
    }
    assert request_body("cohere", "m", "q", ["a", "b"]) == {
        "model": "m",
        "query": "q",
        "documents": ["a", "b"],
        "top_n": 2,
    }
    assert "model" not in request_body("cohere", None, "q", ["a"])


def test_parse_scores() -> None:
    cohere = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0}]}
    assert parse_scores(cohere, 2) == [0.0, 0.9]
    tei = [{"index": 0, "score": 0.2, "text": "a"}, {"index": 1, "score": -3}]
    assert parse_scores(tei, 2) == [0.2, -3.0]
    bad: list[Any] = [
        None,
        "text",
        {"results": "x"},
        [1, 2],
        [{"index": True, "score": 1}],
        [{"index": -1, "score": 1}],
        [{"index": 0, "score": float("nan")}],
        [{"index": 0, "score": None}],
        [{"index": 0, "score": 1}, {"index": 0, "score": 2}],
        [{"index": 0, "score": 1}],
    ]
    for payload in bad:
        with pytest.raises(MalformedReply):
            parse_scores(payload, 2)


class _Given:
    """A test double: scores given in advance (or None, a failure); records what it was asked."""

    def __init__(self, scores: list[float] | None) -> None:
        self.scores = scores
        self.asked: list[list[str]] = []

    async def rerank(self, query: str, texts: Any) -> list[float] | None:
        self.asked.append(list(texts))
        return self.scores


def _hits(n: int) -> list[Hit]:
    return [Hit(i, uuid.uuid4(), "d", "f.pdf", 1, f"text {i}", 1.0 / (i + 1), 10) for i in range(n)]


async def test_rerank_hits_reorders_the_candidates_only() -> None:
    hits = _hits(5)
    given = _Given([0.1, 0.7, 0.7, 0.9])
    out = await rerank_hits(given, "q", hits, candidates=4)
    assert given.asked == [["text 0", "text 1", "text 2", "text 3"]]
    # Best first; the tie (1 and 2) keeps the fused order; the fifth follows unchanged.
    assert [h.chunk_id for h in out] == [3, 1, 2, 0, 4]
    assert [h.score for h in out[:4]] == [0.9, 0.7, 0.7, 0.1]
    assert out[4] is hits[4]


async def test_rerank_hits_unchanged_when_reranking_fails() -> None:
    hits = _hits(3)
    assert await rerank_hits(_Given(None), "q", hits, candidates=30) == hits
    assert await rerank_hits(_Given([1.0]), "q", hits, candidates=30) == hits  # wrong length

"""Quotes and citation checks of model answers over real HTTP (the extractive answerer's are in
test_ask.py): the API answering with the mock model server, whose reply the test scripts."""

from __future__ import annotations

from typing import Any

import httpx

from tests.asking import Doc, ask, fold
from tests.mock_llm import MockLLM

TELESCOPE = "When was the main telescope of the Harwick Observatory installed?"


async def _model_answer(
    llm_api: str, mock_llm: MockLLM, doc: Doc, reply: str
) -> tuple[Any, dict[str, Any]]:
    # No marker in the question (it would change what is retrieved): the next streamed request
    # gets this reply, and the tests run one at a time.
    await mock_llm.script({"stream": True, "text": reply})
    body = {"question": TELESCOPE, "document_id": doc.document_id, "top_k": 3}
    async with httpx.AsyncClient(base_url=llm_api, timeout=60) as client:
        asked = await ask(client, body)
    asked.assert_well_formed()
    done: dict[str, Any] = asked.done
    assert done["mode"] == "llm"
    return asked, done


async def test_a_supported_citation_quotes_its_sentence_with_its_place(
    llm_api: str, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    """The claim cites all three pages; only page 2 holds it, so only its citation is supported,
    and the quote is page 2's sentence."""
    doc = ask_docs["observatory"]
    reply = "The main telescope, a 74-inch reflector, was installed in 1936 [1][2][3]."
    asked, done = await _model_answer(llm_api, mock_llm, doc, reply)
    assert sorted(s["page"] for s in asked.sources) == [1, 2, 3]
    source = next(s for s in asked.sources if s["page"] == 2)
    assert done["answered"] is True
    expected = [{"n": s["n"], "supported": s["page"] == 2} for s in asked.sources]
    assert done["citations"] == expected
    [quote] = done["quotes"]
    assert quote["n"] == source["n"]
    assert quote["page"] == 2
    # The source sentence that backs the claim, word for word, and where it sits on the page.
    assert "installed in 1936" in quote["text"]
    assert fold(quote["text"]) in fold(source["text"])
    assert doc.page_holds(2, quote["text"])
    assert quote["rects"]
    for x0, y0, x1, y1 in quote["rects"]:
        assert 0 <= x0 < x1 <= 1
        assert 0 <= y0 < y1 <= 1
    # On the source's own lines: each quote rectangle lies within the passage's.
    for rect in quote["rects"]:
        assert any(
            r[0] - 0.01 <= rect[0] and rect[2] <= r[2] + 0.01 and r[1] - 0.01 <= rect[1]
            for r in source["rects"]
        ), (rect, source["rects"])


async def test_an_unsupported_citation_has_no_quote(
    llm_api: str, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    reply = "The observatory café serves blueberry pancakes every Sunday morning [1]."
    _, done = await _model_answer(llm_api, mock_llm, ask_docs["observatory"], reply)
    assert done["citations"] == [{"n": 1, "supported": False}]  # only [1] is cited
    assert done["quotes"] == []
    assert done["answered"] is False


async def test_a_refusal_is_not_an_answer(
    llm_api: str, mock_llm: MockLLM, ask_docs: dict[str, Doc]
) -> None:
    reply = "The documents do not say when the telescope was installed."
    _, done = await _model_answer(llm_api, mock_llm, ask_docs["observatory"], reply)
    assert done["answered"] is False
    assert done["quotes"] == []
    assert done["citations"] == []

"""Unit tests of the answer package's pure parts: sentence splitting and selection, deltas,
prompts and budgets, follow-up rewriting, and the SSE encoding on both ends."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from sse_starlette import ServerSentEvent

from docqa.answer import extractive
from docqa.answer.prompt import (
    answer_messages,
    clean_rewrite,
    content_words,
    fit_history,
    fit_sources,
    rewrite_without_model,
)
from docqa.answer.sentences import column_heads, units
from docqa.api.ask import _json, _ping
from docqa.client import sse_events
from docqa.ingest.embed import Vectors
from docqa.search.figures import row_label
from docqa.search.retrieve import Hit


class WordCounter:
    """Counts whitespace-separated words: a stand-in for the tokenizer with obvious numbers."""

    def count(self, text: str) -> int:
        return len(text.split())


class BagOfWordsEmbedder:
    """A deterministic stand-in for the embedding model: hashed bags of content words. The hash
    is CRC-32, not `hash()`, which differs from one process to the next (PYTHONHASHSEED)."""

    dim = 64
    lanes = 1

    def _vector(self, text: str) -> Vectors:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in content_words(text):
            v[zlib.crc32(word.encode()) % self.dim] += 1.0
        norm = float(np.linalg.norm(v))
        return v / norm if norm else v

    def embed_documents(self, texts: list[str]) -> Vectors:
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> Vectors:
        return self._vector(text)


def hit(n: int, text: str, page: int = 1, doc: uuid.UUID | None = None) -> Hit:
    pk = doc or uuid.UUID(int=1)
    return Hit(n, pk, f"doc-{pk.int}", "f.pdf", page, text, 0.01, WordCounter().count(text))


ROWS = "Working capital (1) 1,902,216 1,263,899 883,049\nTotal assets 10,202,871 7,042,500\n"
PERCENT_ROWS = (
    "Net additions 5,624 5,694 (70) (1)% (580) (9)%\n"
    "Memberships at end of period 44,738 39,114 5,624 14 % 5,694 17 %\n"
)


def _units(text: str) -> list[tuple[str, bool]]:
    return [(u.text, u.fragment) for u in units(text)]


def test_units_leave_out_headings_and_mark_cut_edges() -> None:
    text = "continued from before.\nResults\nThe reactor ran for 90 days.\nIt was then shut"
    assert _units(text) == [
        ("continued from before.", True),
        ("The reactor ran for 90 days.", False),
        ("It was then shut", True),
    ]
    assert _units("Methods\nWe measured it twice. Then again.") == [
        ("We measured it twice.", False),
        ("Then again.", False),
    ]
    # A heading between two sentences of one paragraph is glued to neither.
    assert _units("The plant closed. Outlook\nDemand will recover in 2025.") != []
    assert _units("The plant closed.\nOutlook for 2025\nDemand will recover.") == [
        ("The plant closed.", False),
        ("Demand will recover.", False),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Revenues of NIKE, Inc. rose 19% to $44.5 billion. The rise came from Direct.",
            ["Revenues of NIKE, Inc. rose 19% to $44.5 billion.", "The rise came from Direct."],
        ),
        (
            "See Note No. 5 for details. The U.S. market grew 3.5% in 2021. It grew, e.g. In Asia.",
            [
                "See Note No. 5 for details.",
                "The U.S. market grew 3.5% in 2021.",
                "It grew, e.g. In Asia.",
            ],
        ),
        ("Mr. J. Smith agreed. Fig. 3 shows it.", ["Mr. J. Smith agreed.", "Fig. 3 shows it."]),
    ],
)
def test_sentences_survive_abbreviations_initials_and_decimals(
    text: str, expected: list[str]
) -> None:
    assert [u.text for u in units(text)] == expected


def test_list_items_are_units_of_their_own() -> None:
    text = (
        "Several factors explain this:\n• physical challenges to using technology\n"
        "• skeptical attitudes about the benefits\n1. difficulty learning to use new\n"
        "technologies on their own."
    )
    found = units(text)
    assert [(u.text, u.item, u.lead) for u in found] == [
        ("Several factors explain this:", False, True),
        ("physical challenges to using technology", True, False),
        ("skeptical attitudes about the benefits", True, False),
        ("difficulty learning to use new technologies on their own.", True, False),
    ]


BALANCE_SHEET = (
    "Consolidated Balance Sheets\n$ in millions, except per share amounts\n\n"
    "January 28, 2023 January 29, 2022\nAssets\nCurrent assets\n"
    "Cash and cash equivalents $ 1,874 $ 2,936\nReceivables, net 1,141 1,042\n"
    "Total current assets 8,802 10,539\nProperty and equipment\n"
    "Removing the base grille .................... 16\n"
    "Replacing the base grille .................... 17\n"
    "Sales grew 5% in 2022. Margins rose to 20%."
)


def test_rows_of_a_statement_are_units_with_their_column_heads() -> None:
    found = [(u.text, u.row, u.header) for u in units(BALANCE_SHEET)]
    heads = "January 28, 2023 January 29, 2022"
    assert ("Cash and cash equivalents $ 1,874 $ 2,936", True, heads) in found
    assert ("Receivables, net 1,141 1,042", True, heads) in found
    assert ("Total current assets 8,802 10,539", True, heads) in found
    # A contents line's page number and a sentence's figure make no row.
    assert not [t for t, row, _ in found if row and ("grille" in t or "Sales" in t)]
    assert ("Margins rose to 20%.", False, "") in found
    # Column heads inside a run of rows are not a unit of their own: they only head a row.
    heads_inside = (
        "Net sales 1,200 1,100\nFiscal years 2023 2022 2021\nNet earnings 1,419 2,454 1,798"
    )
    assert [(u.text, u.header) for u in units(heads_inside)] == [
        ("Net sales 1,200 1,100", ""),
        ("Net earnings 1,419 2,454 1,798", "Fiscal years 2023 2022 2021"),
    ]
    # A lone line ending in a figure is prose, as before.
    assert [u.row for u in units("The grant was 2.4")] == [False]


@pytest.mark.parametrize(
    ("line", "heads"),
    [
        ("Fiscal Years Ended January 28, 2023 January 29, 2022", True),
        ("(Millions) 2018 2017", True),
        ("As of/ Year Ended December 31, Change 2015 2014 2013 2015 vs. 2014", True),
        ("(Dollars in millions, except per share data) FISCAL 2021 FISCAL 2020 % CHANGE", True),
        ("Percent change compares the full year 2017 with the full year 2016.", False),
        (
            "Accounts receivable, net of allowances of $132 and $190, at December 31, 2019 and "
            "December 31, 2018, respectively 848 1,035",
            False,
        ),
        ("population between 1900 and 1940, which is farm consolidation continues", False),
    ],
)
def test_column_heads_name_years_and_are_not_prose(line: str, heads: bool) -> None:
    assert column_heads(line) is heads


def test_a_row_that_names_years_heads_no_other_row() -> None:
    text = (
        "Accounts receivable, net of allowances of $132 and $190, at December 31, 2019 and "
        "December 31, 2018, respectively 848 1,035\nOther current assets 296 539"
    )
    found = [(u.text, u.row, u.header) for u in units(text)]
    assert found[1] == ("Other current assets 296 539", True, "")
    assert found[0][1], "a row all the same"


def test_a_chosen_row_comes_after_its_column_heads_on_a_line_of_its_own() -> None:
    chosen = extractive.select(
        "What were total current assets?", [hit(1, BALANCE_SHEET)], BagOfWordsEmbedder()
    )
    text = extractive.compose(chosen.sentences)
    assert "January 28, 2023 January 29, 2022 [1]\nTotal current assets 8,802 10,539 [1]" in text
    assert text.count("January 28, 2023 January 29, 2022") == 1


@pytest.mark.parametrize(
    ("question", "acronym"),
    [
        ("What is NARL stand for in this document?", "NARL"),
        ("What does R&D stand for?", "R&D"),
        ("What is the full form of ISRO?", "ISRO"),
        ("What does GDP mean?", "GDP"),
        ("What was NASA's budget in 2020?", ""),  # names an acronym, asks something else
        ("What do NASA and ESA stand for?", ""),  # two: not one expansion to look for
    ],
)
def test_the_acronym_a_question_asks_about(question: str, acronym: str) -> None:
    assert extractive.acronym_asked(question) == acronym


def test_an_acronym_is_spelled_out_by_capitals_joined_by_small_words() -> None:
    assert extractive.spells_out("BLS", "Data from the Bureau of Labor Statistics show it.")
    assert extractive.spells_out("R&D", "Spending on Research and Development rose.")
    assert not extractive.spells_out("NARL", "NARL at Gadanki is a centre for research.")
    assert not extractive.spells_out("BLS", "The Bureau of the Census and Labor Statistics.")


def test_what_an_acronym_stands_for_is_answered_from_the_heading_that_spells_it_out() -> None:
    """A heading is never quoted, except the one that spells out the acronym asked about."""
    text = (
        "National Atmospheric Research Laboratory (NARL)\n"
        "NARL at Gadanki near Tirupati is a centre for atmospheric research. "
        "NARL carries out its research under seven major groups."
    )
    question = "What does NARL stand for?"
    chosen = extractive.select(question, [hit(1, text)], BagOfWordsEmbedder())
    assert chosen.sentences[0].text == "National Atmospheric Research Laboratory (NARL)"
    other = extractive.select("Where is NARL?", [hit(1, text)], BagOfWordsEmbedder())
    assert "National Atmospheric Research Laboratory (NARL)" not in [
        s.text for s in other.sentences
    ]


def test_select_prefers_the_supporting_sentence_and_keeps_reading_order() -> None:
    hits = [
        hit(2, "The ferry carries 300 passengers. The ferry was built in 1987 in Rijeka.", page=2),
        hit(1, "The strait is cold. Storms close the crossing in winter.", page=1),
    ]
    chosen = extractive.select("When was the ferry built?", hits, BagOfWordsEmbedder()).sentences
    texts = [s.text for s in chosen]
    assert "The ferry was built in 1987 in Rijeka." in texts
    assert "The strait is cold." not in texts
    assert [s.order for s in chosen] == sorted(s.order for s in chosen)


def test_select_reuses_the_question_vector_retrieval_made() -> None:
    """Given the question's vector, `select` embeds only the sentences (one model call fewer
    before the first word) and chooses as it would have with its own."""

    class Counting(BagOfWordsEmbedder):
        queries = 0

        def embed_query(self, text: str) -> Vectors:
            self.queries += 1
            return super().embed_query(text)

    hits = [
        hit(2, "The ferry carries 300 passengers. The ferry was built in 1987 in Rijeka.", page=2),
        hit(1, "The strait is cold. Storms close the crossing in winter.", page=1),
    ]
    question = "When was the ferry built?"
    embedder = Counting()
    own = extractive.select(question, hits, embedder)
    assert embedder.queries == 1
    vector = embedder.embed_query(question).tolist()
    given = extractive.select(question, hits, embedder, question_vector=vector)
    assert embedder.queries == 2, "the given vector is used, not made again"
    assert given == own


def test_select_never_repeats_a_sentence_from_overlapping_passages() -> None:
    same = "The dome was restored in 2022 with copper sheets."
    hits = [hit(1, f"Intro text here. {same}"), hit(2, f"{same} More words follow here.")]
    chosen = extractive.select("When was the dome restored?", hits, BagOfWordsEmbedder())
    assert [s.text for s in chosen.sentences].count(same) == 1


def test_select_falls_back_to_the_start_of_the_best_passage() -> None:
    hits = [hit(1, "12 | 13 | 14\n15 | 16")]
    chosen = extractive.select("numbers?", hits, BagOfWordsEmbedder()).sentences
    assert [s.text for s in chosen] == ["12 | 13 | 14 15 | 16"]
    assert extractive.select("anything?", [], BagOfWordsEmbedder()).sentences == []


def test_compose_cites_each_sentence_and_breaks_paragraphs_between_pages() -> None:
    a = extractive.Sentence(1, (0, 1, 0), ("d", 1), "First.", False)
    b = extractive.Sentence(1, (0, 1, 1), ("d", 1), "Second.", False)
    c = extractive.Sentence(2, (0, 2, 0), ("d", 2), "Third.", False)
    assert extractive.compose([a, b, c]) == "First. [1] Second. [1]\n\nThird. [2]"


@pytest.mark.parametrize(
    "text",
    [
        "one",
        "  leading and trailing  ",
        "a b c d e f g h",
        "line one [1]\n\nline two [2]\n",
        "x\ny",
    ],
)
def test_deltas_join_back_to_the_exact_text(text: str) -> None:
    pieces = list(extractive.deltas(text, words_per_delta=2))
    assert "".join(pieces) == text
    assert all(p.strip() for p in pieces)


def test_fit_sources_keeps_the_best_that_fit_the_budget() -> None:
    hits = [hit(1, "w " * 50), hit(2, "w " * 200), hit(3, "w " * 30), hit(4, "w " * 500)]
    kept = fit_sources(hits, budget=120)
    assert [h.chunk_id for h in kept] == [1, 3]
    # The best source is always kept, even alone over the budget.
    assert [h.chunk_id for h in fit_sources(hits[3:], budget=10)] == [4]


def test_answer_messages_number_the_sources_and_end_with_the_question() -> None:
    hits = [hit(7, "Alpha text.", page=3), hit(9, "Beta text.", page=5)]
    history = [
        {"role": "assistant", "content": "orphan reply"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer [1]"},
    ]
    messages = answer_messages("And now?", hits, history, WordCounter(), budget=1000)  # type: ignore[arg-type]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "[1]" in messages[0]["content"]
    last = messages[-1]["content"]
    assert "[1] f.pdf, page 3\nAlpha text." in last
    assert "[2] f.pdf, page 5\nBeta text." in last
    assert last.endswith("Question: And now?")


def test_fit_history_keeps_the_most_recent_turns_within_budget() -> None:
    history = [
        {"role": "user", "content": "one two three four five six"},
        {"role": "assistant", "content": "a b"},
        {"role": "user", "content": "c d"},
    ]
    assert fit_history(history, WordCounter(), budget=12) == history[2:]  # type: ignore[arg-type]
    assert fit_history(history, WordCounter(), budget=100) == history  # type: ignore[arg-type]


def test_rewrite_without_model_carries_the_previous_question_topic() -> None:
    history = [
        {"role": "user", "content": "How often does the Lindqvist ferry cross?"},
        {"role": "assistant", "content": "Twelve times a day."},
    ]
    out = rewrite_without_model("Where was it built?", history)  # type: ignore[arg-type]
    assert out == "often lindqvist ferry cross Where was it built?"
    assert rewrite_without_model("Where was the ferry built?", []) == "Where was the ferry built?"


def test_clean_rewrite_strips_labels_and_quotes() -> None:
    assert clean_rewrite('Standalone question: "Where is X?"', "q") == "Where is X?"
    assert clean_rewrite("  \n", "original") == "original"


def test_ping_is_a_bare_comment_line() -> None:
    assert _ping().encode() == b": ping\r\n\r\n"


def test_json_events_stay_on_one_line_for_every_line_reader() -> None:
    value = {"text": "a\u2028b\x85c\u2029d\ne"}
    encoded = _json(value)
    assert encoded.splitlines() == [encoded]
    assert json.loads(encoded) == value


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


async def parse(chunks: list[bytes]) -> list[tuple[str, str]]:
    response = httpx.Response(200, stream=Chunks(chunks))
    return [event async for event in sse_events(response)]


@pytest.mark.parametrize("delta", ["plain", " leading space", "two\nlines", "blank\n\nline", "\n"])
async def test_a_delta_survives_the_wire_exactly(delta: str) -> None:
    wire = ServerSentEvent(delta).encode()
    # Cut the bytes everywhere, so that line ends split across reads are covered too.
    for cut in range(1, len(wire)):
        assert await parse([wire[:cut], wire[cut:]]) == [("message", delta)]


async def test_sse_reader_follows_the_spec() -> None:
    raw = (
        b": ping\r\n\r\n"
        b"event: sources\r\ndata: [1,\r\ndata: 2]\r\n\r\n"
        b"data: x\n\n"
        b"event: nothing\r\n\r\n"
        b"data:no-space\r\r"
        b"event: done\ndata: {}\n\n"
        b"data: unterminated"
    )
    assert await parse([raw]) == [
        ("sources", "[1,\n2]"),
        ("message", "x"),
        ("message", "no-space"),
        ("done", "{}"),
    ]


def test_a_sentence_that_restates_the_question_loses_to_one_that_answers() -> None:
    hits = [
        hit(
            1,
            "Older adults face a number of hurdles in adopting new technologies. Many say "
            "physical challenges, such as poor eyesight, make small screens hard to use, and "
            "a third lack confidence in learning new devices on their own.",
        )
    ]
    question = "What hurdles do older adults face in adopting new technologies?"
    chosen = extractive.select(question, hits, BagOfWordsEmbedder()).sentences
    assert chosen[0].text.startswith("Many say physical challenges")
    assert all("face a number of hurdles" not in s.text for s in chosen)


def test_a_list_question_gets_the_items() -> None:
    hits = [
        hit(
            1,
            "Seniors face several barriers to adoption:\n• physical challenges to using "
            "technology\n• skeptical attitudes about the benefits of the internet\n"
            "• difficulty learning to use new technologies\n\nThe survey ran in 2013.",
        )
    ]
    question = "Which barriers to adoption do seniors face?"
    assert extractive.question_kind(question) == "list"
    chosen = extractive.select(question, hits, BagOfWordsEmbedder()).sentences
    assert [s.item for s in chosen] == [False, True, True, True]
    text = extractive.compose(chosen)
    assert text.startswith("Seniors face several barriers to adoption: [1]\n• physical")


def test_a_number_question_prefers_a_sentence_with_a_number() -> None:
    hits = [
        hit(1, "The company reports its revenue for each segment in the notes of the filing."),
        hit(2, "Net revenue for the segment was $1,204 million in 2022, up 8 percent."),
    ]
    question = "What was the segment's net revenue in 2022?"
    assert extractive.question_kind(question) == "number"
    chosen = extractive.select(question, hits, BagOfWordsEmbedder()).sentences
    assert chosen[0].text.startswith("Net revenue for the segment was $1,204")


def test_the_value_of_a_measure_is_a_number_to_the_answerer() -> None:
    assert extractive.question_kind("What is Netflix working capital in FY2015?") == "number"
    assert extractive.question_kind("Why does working capital matter?") == "why"


def test_a_measure_is_answered_with_the_rows_it_is_computed_from() -> None:
    prose = (
        "Our current ratio in fiscal 2023 stayed above the ratio our lenders require. The "
        "current ratio is a measure of liquidity that management reviews every quarter. We "
        "believe our current ratio in fiscal 2023 remains strong."
    )
    statement = (
        "Fiscal years 2023 2022\nCash and cash equivalents 1,874 2,936\n"
        "Total current assets 8,802 10,539\nAccounts payable 5,687 6,803\n"
        "Total current liabilities 8,979 10,674\nLong-term debt 1,160 1,216"
    )
    hits = [
        hit(1, prose, page=12),
        hit(2, "Liquidity risks are discussed in the notes.", page=20),
        hit(3, statement, page=40),
    ]
    question = "What was the current ratio in fiscal 2023?"
    text = extractive.compose(extractive.select(question, hits, BagOfWordsEmbedder()).sentences)
    # The prose that names the ratio wins on words; the rows hold what it is computed from.
    assert "Fiscal years 2023 2022 [3]\nTotal current assets 8,802 10,539 [3]\n" in text
    assert "Total current liabilities 8,979 10,674 [3]" in text
    assert "Accounts payable" not in text


def test_the_name_every_passage_shares_does_not_decide_the_answer() -> None:
    hits = [
        hit(
            1,
            "NIKE employees volunteer in their communities every year. As of May 31, 2021, we "
            "had approximately 73,300 employees worldwide.",
        ),
        hit(2, "NIKE sells apparel through NIKE Direct stores and wholesale partners."),
        hit(3, "NIKE Brand revenues grew in every region of the world."),
    ]
    question = "How many employees did NIKE have?"
    chosen = extractive.select(question, hits, BagOfWordsEmbedder()).sentences
    assert any("73,300 employees" in s.text for s in chosen)


def test_the_year_a_question_names_is_no_figure_that_answers_it() -> None:
    question = "How many domestic stores did Best Buy have at the end of fiscal 2023?"
    assert extractive.question_kind(question) == "number"
    lead = "The ownership status of our domestic stores at the end of fiscal 2023 was as follows:"
    assert extractive.information("number", lead, question) == 0.0
    assert extractive.information("number", "Total domestic stores 978", question) == 1.0
    assert extractive.information("number", "It had twelve stores in 2023.", question) == 1.0


def test_a_sentence_that_only_leads_into_a_table_does_not_crowd_out_its_row() -> None:
    text = (
        "The location and ownership of our domestic stores at the end of fiscal 2023 were as "
        "follows:\n\nOutlet centers 19 16\nTotal domestic stores 978 984\n"
    )
    question = "How many domestic stores were open at the end of fiscal 2023?"
    chosen = extractive.select(question, [hit(1, text)], BagOfWordsEmbedder()).sentences
    assert "Total domestic stores 978 984" in [s.text for s in chosen]


def test_a_row_is_compared_with_the_question_by_its_label_too() -> None:
    assert row_label("Working capital (1) 1,902,216 1,263,899 883,049") == "Working capital"
    assert row_label("Net additions 5,624 5,694 (70) (1)% (580) (9)%") == "Net additions"

    class Recording(BagOfWordsEmbedder):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def embed_documents(self, texts: list[str]) -> Vectors:
            self.seen.extend(texts)
            return super().embed_documents(texts)

    embedder = Recording()
    extractive.select("What was working capital?", [hit(1, ROWS)], embedder)
    assert "Working capital" in embedder.seen


def test_a_percentage_written_apart_ends_a_row() -> None:
    found = [(u.text, u.row) for u in units(PERCENT_ROWS)]
    assert ("Memberships at end of period 44,738 39,114 5,624 14 % 5,694 17 %", True) in found
    assert ("Net additions 5,624 5,694 (70) (1)% (580) (9)%", True) in found


def test_a_question_about_a_measure_reads_the_lines_it_is_made_of() -> None:
    text = (
        "Capital spending is discussed in more detail in the section on investing.\n\n"
        "Cash flows from investing activities\n"
        "Purchases of property, plant and equipment (1,577) (1,373)\n"
        "Proceeds from sale of businesses 846 142\n"
    )
    question = "What was the capital expenditure in 2018?"
    chosen = extractive.select(question, [hit(1, text)], BagOfWordsEmbedder()).sentences
    assert "Purchases of property, plant and equipment (1,577) (1,373)" in [s.text for s in chosen]


def test_citation_filter_drops_markers_that_name_no_source() -> None:
    from docqa.answer.support import CitationFilter

    cleaner = CitationFilter(sources=3)
    pieces = ["Sales rose [", "1] and fell [7", "]. Costs [2, 9] rose [3", "-5]."]
    out = "".join(cleaner.feed(p) for p in pieces) + cleaner.flush()
    assert out == "Sales rose [1] and fell . Costs [2] rose [3]."


def test_claims_and_refusals_are_read_from_a_reply() -> None:
    from docqa.answer.support import claims, refuses

    reply = "Revenue grew 8% in 2022 [2]. It came from Europe. [1][3]\nNo source here."
    found = claims(reply)
    assert [(c.text, c.sources) for c in found] == [
        ("Revenue grew 8% in 2022 .", (2,)),
        ("It came from Europe.", (1, 3)),
    ]
    assert refuses("The provided sources do not contain this information.")
    assert refuses("I couldn't find this in your documents.")
    assert not refuses("Revenue grew 8% in 2022 [2].")


def test_evidence_refuses_weak_matches_and_years_no_document_mentions() -> None:
    from docqa.answer.evidence import Evidence, years_in

    assert Evidence(0.62, 0.55).answers()
    assert not Evidence(0.12, 0.18).answers()  # "What is the capital of France?" of a 10-K
    assert Evidence(0.12, 0.45).answers()  # a close chunk keeps it: tables hold few sentences
    missing = Evidence(0.7, 0.6, ("2024",))
    assert not missing.answers()
    assert missing.reason() == "I couldn't find this in your documents: they never mention 2024."
    assert years_in("From 2002 to 2023, and in FY2021 or 2,024 units?") == ["2002", "2023"]
    named = Evidence(0.7, 0.6, ("Edwin Hubble", "2031"))
    assert named.reason() == (
        "I couldn't find this in your documents: they never mention Edwin Hubble or 2031."
    )


def test_evidence_refuses_when_most_subject_words_are_unwritten_and_nothing_is_close() -> None:
    from docqa.answer.evidence import Evidence, subject_words

    # Words that ask, instruct or name a kind of thing are not what a question is about.
    assert subject_words("How do I knit a scarf? Answer in list format, page 3 of FY2021.") == [
        "knit",
        "scarf",
    ]
    assert subject_words("What is the title of the diagram?") == ["title"]
    # Two of three subject words written nowhere, and passages only loosely like the question.
    knit = Evidence(0.31, 0.30, absent_words=("knit", "scarf"), subject_count=3)
    assert knit.unfamiliar
    assert not knit.answers()
    assert knit.reason() == (
        "I couldn't find this in your documents: they never use the words \u201cknit\u201d or "
        "\u201cscarf\u201d."
    )
    # A close passage keeps it (a question worded unlike the documents), and so does a
    # question most of whose words the documents hold.
    assert Evidence(0.31, 0.36, absent_words=("knit", "scarf"), subject_count=3).answers()
    assert Evidence(0.36, 0.30, absent_words=("knit", "scarf"), subject_count=3).answers()
    assert Evidence(0.31, 0.30, absent_words=("knit",), subject_count=2).answers()
    assert Evidence(0.31, 0.30).answers()  # nothing looked up: the other rules decide
    # A follow-up's nearest chunk was found with the turn before's words: only its own
    # sentences count.
    assert not Evidence(0.31, 0.5, (), ("knit", "scarf"), 3, follows_up=True).answers()
    assert Evidence(0.31, 0.5, (), ("knit", "scarf"), 3).answers()
    one = Evidence(0.2, 0.3, absent_words=("cricket",), subject_count=1)
    assert one.reason() == (
        "I couldn't find this in your documents: they never use the word \u201ccricket\u201d."
    )


@pytest.mark.parametrize(
    ("question", "names"),
    [
        ("According to this document, Lebron Brennan belongs to which agency?", ["Lebron Brennan"]),
        ("What was NIKE's revenue? Answer in USD millions.", ["NIKE"]),
        ("Among Clinton, G.W.Bush, and Obama, whose rate rose?", ["Clinton", "G.W.Bush", "Obama"]),
        (
            "What score did LLaVa + Step-Back get in MMLU Physics?",
            ["LLaVa", "Step-Back", "MMLU Physics"],
        ),
        # Case says nothing in a sentence of capitals, or at a sentence's start.
        ("WHAT IS THE COMPANY LOGO COLOR?", []),
        ("Revenue in 2021? Please round it.", []),
        # Figures, units, months, initials, and an acronym the question spells out.
        ("What was the FY2021 EPS for March, in the U.S.?", []),
        ("What is its days payable outstanding (DPO)?", []),
        ("Give the date as YYYY-MM-DD.", []),
        ("what is the label 'Contact.Meet' for?", ["Contact.Meet"]),
        # Letters of any script belong to the word.
        ("What did Société Générale and Nestlé report?", ["Société Générale", "Nestlé"]),
    ],
)
def test_names_a_question_uses(question: str, names: list[str]) -> None:
    from docqa.answer.evidence import names_in

    assert names_in(question) == names


def test_a_name_is_looked_for_under_its_likely_forms() -> None:
    from docqa.answer.evidence import word_forms

    assert word_forms("Nike") == ["nike"]  # short names must match as written
    assert word_forms("After-tax") == ["after-tax", "after tax"]
    loose = word_forms("Neflix")
    assert loose[0] == "neflix"
    assert {"netflix", "nelfix", "neflex", "neflx", "ne flix"} <= set(loose)  # one letter off
    assert "singapor" in word_forms("Singaporean")  # a shorter word it begins with
    assert "nestle" in word_forms("Nestlé")
    assert all(form.startswith("n") for form in loose)


def test_claims_support_embeds_once_and_scores_each_citation(local_embedder: Any) -> None:
    """Every claim and every cited source's sentences go through the model in one pass, each
    once; each citation is scored against its own source."""
    from docqa.answer import extractive
    from docqa.answer.support import Check, claims_support

    calls: list[list[str]] = []

    class Counting:
        def embed_documents(self, texts: list[str]) -> Any:
            calls.append(list(texts))
            return local_embedder.embed_documents(texts)

    ferry = "The ferry leaves at noon. It crosses the strait in forty minutes."
    bakery = "The bakery opens at six. Its rye bread sells out by nine."
    claim = "The ferry crosses the strait in forty minutes."
    words = extractive.terms(claim)
    checks = [
        Check(claim, words, ferry, extractive.terms(ferry)),
        Check(claim, words, bakery, extractive.terms(bakery)),
        Check(claim, words, ferry, extractive.terms(ferry)),
    ]
    supports = claims_support(checks, Counting())  # type: ignore[arg-type]
    assert len(calls) == 1
    assert len(calls[0]) == 1 + 2 + 2, "the claim once, each source's two sentences once"
    assert supports[0].sentence == "It crosses the strait in forty minutes."
    assert supports[0].score >= 0.5 > supports[1].score
    assert supports[2] == supports[0]
    assert claims_support([], Counting()) == []  # type: ignore[arg-type]


def test_words_of_one_family_meet_where_the_stemmer_leaves_them_apart() -> None:
    assert extractive.family("employee", {"employ", "employment", "emperor"}) == {
        "employee",
        "employ",
    }
    assert extractive.family("employ", {"employee", "employment", "emperor"}) == {
        "employ",
        "employee",
        "employment",
    }
    # Short words stay themselves: "cost" is not "costume", "state" not "statement".
    assert extractive.family("cost", {"costume"}) == {"cost"}
    assert extractive.family("statement", {"state"}) == {"statement"}
    question = "How many employees work in the plant?"
    sentences = extractive.candidates(
        [
            hit(1, "At year end 93,516 people were employed full time."),
            hit(2, "Sales grew in Asia Pacific last year."),
        ]
    )
    employed, sales = extractive.lexical_scores(question, sentences)
    assert employed > 0
    assert sales == 0

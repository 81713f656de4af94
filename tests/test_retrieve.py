"""Retrieval on a real PostgreSQL: BM25 against a reference, the filtered vector scan, isolation.

The documents go through the real pipeline (`docqa.evaluate.ingest`), so the chunks, vectors and
tsvectors are the ones a deployment would hold.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from docqa.blobs import LocalBlobStore
from docqa.db.engine import Database, open_database
from docqa.evalsets import EvalDocument
from docqa.evaluate import ingest
from docqa.ingest.embed import LocalEmbedder, Tokenizer
from docqa.ingest.pipeline import Runtime
from docqa.search import lexical, vector
from docqa.search import retrieve as retrieval
from docqa.search.figures import asks_for_figure, figure_share
from docqa.search.index import BLOCK, RECORD
from docqa.settings import Settings
from tests.postings import pack, read_blocks
from tests.stack import new_database

TEXTS = {
    "rivers": "The Danube and the Rhine are rivers. The Danube river is long; rivers flood.",
    "deserts": "The Atacama desert is dry. Deserts get little rain, and desert plants store water.",
    "mountains": "Everest is a mountain in the Himalaya. Mountain air is cold and thin.",
    "rain": "Rain falls on rivers and mountains alike, and rain feeds every river in the valley.",
    "mixed": "A long report about rivers, deserts and mountains, and about rain in each of them, "
    + "with many other words that make this passage much longer than the others. " * 3,
}


@dataclass
class Corpus:
    db: Database
    embedder: LocalEmbedder
    owner: str
    pks: dict[str, uuid.UUID]
    other_owner: str
    other_pks: dict[str, uuid.UUID]


@pytest.fixture(scope="module")
def pg_url(pg_server_url: str) -> str:
    # A database of its own: BM25's statistics here cover only this module's documents.
    return new_database(pg_server_url, "docqa_retrieve")


@pytest.fixture(scope="module")
async def corpus(
    pg_url: str, local_embedder: LocalEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Corpus]:
    settings = Settings(database_url=pg_url, data_dir=tmp_path_factory.mktemp("retrieve-data"))
    db = await open_database(settings, pool_size=2)
    embedder = local_embedder
    rt = Runtime(settings, db, LocalBlobStore(settings.blob_dir), embedder, Tokenizer())
    docs = [EvalDocument(k, f"{k}.txt", "text", text=t) for k, t in TEXTS.items()]
    try:
        mine = await ingest(rt, "owner-a", docs, lambda *_: None)
        # The same texts under another owner: they must never show up in owner-a's results.
        theirs = await ingest(rt, "owner-b", docs, lambda *_: None)
    finally:
        await rt.aclose()  # its embedding queue and sandboxes; the shared model stays
    assert not mine.failed
    assert not theirs.failed
    yield Corpus(db, embedder, "owner-a", mine.pks, "owner-b", theirs.pks)
    await db.close()


async def _ingest_texts(
    corpus: Corpus, pg_url: str, tmp_path: Path, owner: str, texts: dict[str, str]
) -> dict[str, uuid.UUID]:
    """Plain texts ingested through the real pipeline under `owner`: their pks by key."""
    settings = Settings(database_url=pg_url, data_dir=tmp_path)
    rt = Runtime(
        settings, corpus.db, LocalBlobStore(settings.blob_dir), corpus.embedder, Tokenizer()
    )
    docs = [EvalDocument(k, f"{k}.txt", "text", text=t) for k, t in texts.items()]
    try:
        done = await ingest(rt, owner, docs, lambda *_: None)
    finally:
        await rt.aclose()
    return done.pks


async def _reference_bm25(corpus: Corpus, question: str, pks: list[uuid.UUID]) -> dict[int, float]:
    """BM25 computed in Python from the chunks' stored tsvectors (not from the postings), over
    owner-a's documents `pks`."""
    async with corpus.db.session() as session:
        terms = set(
            (
                await session.execute(
                    text("SELECT lexeme FROM unnest(to_tsvector('english', :q))"), {"q": question}
                )
            ).scalars()
        )
        rows = (
            await session.execute(
                text(
                    "SELECT c.id, c.token_count, t.lexeme, cardinality(t.positions) AS tf "
                    "FROM chunks c, unnest(c.tsv) t "
                    "WHERE c.owner_id = :owner AND c.document_pk = ANY(:pks)"
                ),
                {"owner": corpus.owner, "pks": pks},
            )
        ).all()
    lengths = {row.id: row.token_count for row in rows}
    tfs: dict[int, dict[str, int]] = {}
    for row in rows:
        tfs.setdefault(row.id, {})[row.lexeme] = row.tf
    n, avgdl = len(lengths), sum(lengths.values()) / len(lengths)
    df = {t: sum(1 for f in tfs.values() if t in f) for t in terms}
    k1, b = lexical.BM25_K1, lexical.BM25_B
    scores: dict[int, float] = {}
    for cid, freqs in tfs.items():
        matched = [t for t in terms if t in freqs]
        if matched:
            scores[cid] = sum(
                math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                * freqs[t]
                * (k1 + 1)
                / (freqs[t] + k1 * (1 - b + b * lengths[cid] / avgdl))
                for t in matched
            )
    return scores


@pytest.mark.parametrize(
    "question",
    [
        "Which rivers flood after rain?",
        "dry desert plants",
        # Words no chunk holds do not stop the others from matching (OR, not AND).
        "mountain xylophone quasar",
    ],
)
# All documents, and a subset: the statistics describe exactly the documents searched.
@pytest.mark.parametrize("keys", [None, ("rivers", "rain", "mixed")])
async def test_bm25_matches_reference(
    corpus: Corpus, question: str, keys: tuple[str, ...] | None
) -> None:
    pks = [corpus.pks[k] for k in keys] if keys else list(corpus.pks.values())
    expected = await _reference_bm25(corpus, question, pks)
    async with corpus.db.session() as session:
        got = await lexical.lexical_ranking(
            session,
            owner_id=corpus.owner,
            document_pks=pks,
            question=question,
            limit=100,
        )
    assert got, question
    assert {cid for cid, _ in got} == set(expected)
    for cid, score in got:
        assert score == pytest.approx(expected[cid], rel=1e-9)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    if keys is None:
        # The whole library, marked as such, leaves the document filter out: same ranking.
        async with corpus.db.session() as session:
            library = await lexical.lexical_ranking(
                session,
                owner_id=corpus.owner,
                document_pks=lexical.Library(len(pks)),
                question=question,
                limit=100,
            )
        assert library == got


async def test_presence_finds_forms_in_the_documents_searched(corpus: Corpus) -> None:
    forms = ["Danube", "Atacama", "Everest", "quasar", "danube atacama", "the"]
    async with corpus.db.session() as session:
        some = await lexical.presence(
            session, owner_id=corpus.owner, document_pks=[corpus.pks["rivers"]], forms=forms
        )
        everything = await lexical.presence(
            session,
            owner_id=corpus.owner,
            document_pks=lexical.Library(len(corpus.pks)),
            forms=forms,
        )
        elsewhere = await lexical.presence(
            session,
            owner_id="nobody",
            document_pks=lexical.Library(1),
            forms=["danube"],
        )
    # A stop word, which the index does not keep, is left out rather than reported missing.
    assert some == {
        "Danube": True,
        "Atacama": False,
        "Everest": False,
        "quasar": False,
        "danube atacama": False,  # every word of a form must occur
    }
    assert everything == {
        "Danube": True,
        "Atacama": True,
        "Everest": True,
        "quasar": False,
        "danube atacama": True,
    }
    assert elsewhere == {"danube": False}


async def test_tsquery_syntax_in_a_question_is_just_text(corpus: Corpus) -> None:
    hits = await retrieval.retrieve(
        corpus.db,
        corpus.embedder,
        owner_id=corpus.owner,
        document_pks=list(corpus.pks.values()),
        question="desert's \\ 'plants' & | ! <-> :* (water) \\'",
        top_k=3,
        mode="lexical",
    )
    assert hits
    assert hits[0].document_pk == corpus.pks["deserts"]


@pytest.mark.parametrize("question", ["???", "", "the and of it"])
async def test_a_question_of_stop_words_matches_nothing(corpus: Corpus, question: str) -> None:
    hits = await retrieval.retrieve(
        corpus.db,
        corpus.embedder,
        owner_id=corpus.owner,
        document_pks=list(corpus.pks.values()),
        question=question,
        top_k=3,
        mode="lexical",
    )
    assert hits == []


async def test_filtered_vector_scan_returns_the_whole_small_scope(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced onto HNSW, a filter to one document of ten comes back short (pgvector 0.6 filters
    after the scan); the exact scan then makes up the rows."""
    monkeypatch.setattr(vector, "EXACT_MAX_CHUNKS", 0)
    one = [corpus.pks["deserts"]]
    async with corpus.db.session() as session:
        scope = (
            await session.execute(
                text("SELECT count(*) FROM chunks WHERE document_pk = :pk"), {"pk": one[0]}
            )
        ).scalar_one()
        qvec = vector.start_embedding(corpus.embedder, "dry places")
        got = await vector.vector_ranking(
            session, owner_id=corpus.owner, document_pks=one, qvec=qvec, limit=10
        )
    assert len(got) == scope
    sims = [s for _, s in got]
    assert sims == sorted(sims, reverse=True)


@pytest.mark.parametrize("mode", ["lexical", "vector", "hybrid"])
async def test_results_stay_within_owner_and_documents(corpus: Corpus, mode: str) -> None:
    asked = [corpus.pks["rivers"], corpus.pks["rain"]]
    hits = await retrieval.retrieve(
        corpus.db,
        corpus.embedder,
        owner_id=corpus.owner,
        document_pks=asked,
        question="rivers and rain in the mountains",
        top_k=10,
        mode=mode,
    )
    assert hits
    assert {h.document_pk for h in hits} <= set(asked)
    # Another owner's document ids, asked for under this owner, give nothing.
    stolen = await retrieval.retrieve(
        corpus.db,
        corpus.embedder,
        owner_id=corpus.owner,
        document_pks=list(corpus.other_pks.values()),
        question="rivers",
        top_k=10,
        mode=mode,
    )
    assert stolen == []


async def test_hybrid_fuses_both_rankings(corpus: Corpus) -> None:
    pks = list(corpus.pks.values())
    args = {"owner_id": corpus.owner, "document_pks": pks, "top_k": 5}
    question = "Which desert gets little rain?"
    hybrid = await retrieval.retrieve(corpus.db, corpus.embedder, question=question, **args)
    by_bm25 = await retrieval.retrieve(
        corpus.db, corpus.embedder, question=question, mode="lexical", **args
    )
    by_vector = await retrieval.retrieve(
        corpus.db, corpus.embedder, question=question, mode="vector", **args
    )
    assert hybrid[0].document_pk == corpus.pks["deserts"]
    assert {h.chunk_id for h in hybrid} <= {h.chunk_id for h in by_bm25 + by_vector}
    assert all(h.filename.endswith(".txt") and h.page == 1 for h in hybrid)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


_STATEMENT_ROWS = "\n".join(
    (
        "Cash and cash equivalents 1,874 2,936",
        "Short-term investments 7 9",
        "Receivables, net 1,141 1,042",
        "Merchandise inventories 5,140 5,965",
        "Other current assets 640 587",
        "Total current assets 8,802 10,539",
        "Property and equipment, net 2,352 2,250",
        "Operating lease assets 2,746 2,654",
        "Goodwill 1,383 1,384",
        "Other assets 520 677",
        "Total assets 15,803 17,504",
        "Accounts payable 5,687 6,803",
        "Unredeemed gift card liabilities 266 316",
        "Deferred revenue 1,046 1,103",
        "Accrued compensation 405 845",
        "Accrued liabilities 843 946",
        "Current operating lease liabilities 638 648",
        "Current portion of long-term debt 16 13",
        "Total current liabilities 8,979 10,674",
        "Working capital (177) (135)",
        "Long-term debt 1,160 1,216",
    )
)
FILING = {
    "liquidity": "Our working capital in fiscal 2023 was lower than our working capital in "
    "fiscal 2022. Working capital is how we measure liquidity: working capital needs vary with "
    "the season, and management reviews working capital every quarter of the fiscal year.",
    "balance-sheet": "Consolidated balance sheets (in millions)\nFiscal years 2023 2022\n"
    + _STATEMENT_ROWS,
    "stores": "We opened twelve stores this year and closed four; most new stores are small.",
    "people": "Our employees are our strength, and we invest in training them every year.",
    "risks": "Risks include competition, changes in consumer spending and supply problems.",
}


async def test_a_question_that_asks_for_a_figure_prefers_the_statement(
    corpus: Corpus, pg_url: str, tmp_path: Path
) -> None:
    pks = await _ingest_texts(corpus, pg_url, tmp_path, "owner-filing", FILING)
    args = {"owner_id": "owner-filing", "document_pks": list(pks.values()), "top_k": 3}

    async def first(question: str) -> str:
        hits = await retrieval.retrieve(corpus.db, corpus.embedder, question=question, **args)
        return next(k for k, pk in pks.items() if pk == hits[0].document_pk)

    # Prose about the measure matches the words better; the statement holds the figure.
    assert await first("What was the working capital in fiscal 2023?") == "balance-sheet"
    assert await first("What is the current ratio?") == "balance-sheet"  # a measure it names
    assert (
        await first("Why does management review its working capital every quarter?") == "liquidity"
    )


async def test_postings_are_written_on_ready_and_go_with_the_document(
    corpus: Corpus, pg_url: str, tmp_path: Path
) -> None:
    text_ = "Glaciers carve valleys. A glacier moves slowly, and glaciers melt in summer."
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    pk = (await _ingest_texts(corpus, pg_url, tmp_path, owner, {"ice": text_}))["ice"]

    async def rows(sql: str) -> list[Any]:
        async with corpus.db.session() as session:
            return list(await session.execute(text(sql), {"pk": pk}))

    postings: dict[str, tuple[list[int], list[int]]] = {}
    for row in await rows(
        "SELECT lexeme, first_id, entries FROM postings WHERE document_pk = :pk "
        "ORDER BY lexeme, block"
    ):
        entries = read_blocks([(row.first_id, row.entries)])
        ids, tfs = postings.setdefault(row.lexeme, ([], []))
        ids.extend(entries["chunk_id"].tolist())
        tfs.extend(entries["tf"].tolist())
    [chunks] = await rows(
        "SELECT array_agg(id ORDER BY id) AS ids, sum(token_count) AS tokens "
        "FROM chunks WHERE document_pk = :pk"
    )
    [totals] = await rows("SELECT chunk_count, token_count FROM documents WHERE pk = :pk")
    assert postings["glacier"] == (chunks.ids, [3])  # Glaciers, glacier, glaciers
    assert postings["valley"] == (chunks.ids, [1])
    assert "and" not in postings  # a stop word
    assert (totals.chunk_count, totals.token_count) == (len(chunks.ids), chunks.tokens)
    async with corpus.db.session() as session, session.begin():
        await session.execute(text("DELETE FROM documents WHERE pk = :pk"), {"pk": pk})
    assert await rows("SELECT 1 FROM postings WHERE document_pk = :pk") == []


async def test_a_long_documents_postings_are_cut_into_blocks_in_chunk_order(
    corpus: Corpus, pg_url: str, tmp_path: Path
) -> None:
    """A lexeme held by more chunks than a block holds gets several blocks, which together list
    every chunk once, in order, with its own length; BM25 over them matches the reference."""
    words = ["ice", "snow", "meltwater", "moraine", "crevasse", "summit", "ridge", "valley"]
    paragraphs = [
        f"Section {i}. The glacier report number {i}. "
        + " ".join(words[(i + j) % len(words)] for j in range(150))
        for i in range(80)
    ]
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    texts = {"long": "\n\n".join(paragraphs)}
    pk = (await _ingest_texts(corpus, pg_url, tmp_path, owner, texts))["long"]
    async with corpus.db.session() as session:
        blocks = (
            await session.execute(
                text(
                    "SELECT block, first_id, entries FROM postings "
                    "WHERE document_pk = :pk AND lexeme = 'glacier' ORDER BY block"
                ),
                {"pk": pk},
            )
        ).all()
        chunks = (
            await session.execute(
                text(
                    "SELECT id, token_count FROM chunks WHERE document_pk = :pk "
                    "AND tsv @@ 'glacier'::tsquery ORDER BY id"
                ),
                {"pk": pk},
            )
        ).all()
    assert len(chunks) > BLOCK, "the document should have more chunks than a block holds"
    assert [b.block for b in blocks] == list(range(-(-len(chunks) // BLOCK)))
    entries = read_blocks((b.first_id, b.entries) for b in blocks)
    assert all(len(b.entries) <= BLOCK * RECORD.itemsize for b in blocks)
    assert entries["chunk_id"].tolist() == [c.id for c in chunks]
    assert entries["dl"].tolist() == [c.token_count for c in chunks]
    async with corpus.db.session() as session:
        got = await lexical.lexical_ranking(
            session, owner_id=owner, document_pks=[pk], question="glacier moraine", limit=500
        )
    assert {cid for cid, _ in got} >= {c.id for c in chunks}


def test_bm25_top_matches_a_plain_sum_and_breaks_ties_by_id() -> None:
    """The numpy scoring against a loop over the same postings: dense and sparse chunk ids,
    ties at the cut, and a limit larger than the matches."""
    rng = np.random.default_rng(3)
    sparse = 10**12 + np.sort(rng.choice(10**9, 3000, replace=False))
    for ids_pool in (np.arange(1, 3000), sparse):
        postings = []
        for size in (5, 400, 2500):
            ids = np.sort(rng.choice(ids_pool, size, replace=False))
            postings.append((ids, rng.integers(1, 4, size), rng.integers(50, 250, size)))
        terms = [pack(*p) for p in postings]
        n, avgdl = 3000.0, 150.0
        expected: dict[int, float] = {}
        for ids, tfs, dls in postings:
            df = len(ids)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for cid, tf, dl in zip(ids.tolist(), tfs.tolist(), dls.tolist(), strict=True):
                k1, b = lexical.BM25_K1, lexical.BM25_B
                w = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
                expected[cid] = expected.get(cid, 0.0) + w
        want = sorted(expected.items(), key=lambda kv: (-round(kv[1], 9), kv[0]))
        for limit in (10, 100, 10_000):
            got = lexical.bm25_top(terms, n, avgdl, limit)
            assert [cid for cid, _ in got] == [cid for cid, _ in want[:limit]]
            assert [s for _, s in got] == pytest.approx([s for _, s in want[:limit]], rel=1e-9)
    # Ties: the same weights for three chunks; a cut between them keeps the lowest ids.
    assert [c for c, _ in lexical.bm25_top([pack([10, 20, 30], 1, 100)], 10.0, 100.0, 2)] == [
        10,
        20,
    ]
    assert lexical.bm25_top([], 10.0, 100.0, 5) == []


def test_a_financial_measure_brings_its_line_items_to_the_lexical_side() -> None:
    from docqa.search.expand import lexical_query

    assert lexical_query("What is the FY2021 cash ratio for Nike?").endswith(
        "cash and equivalents total current liabilities"
    )
    assert "purchases of property plant equipment" in lexical_query("What was 3M's CAPEX?")
    assert "revenues total assets" not in lexical_query("What is the fixed asset turnover?")
    # A question that names no measure is searched as it is.
    question = "Who founded the Harwick Observatory?"
    assert lexical_query(question) == question


def test_the_share_of_a_passage_made_of_figures_and_questions_that_ask_for_one() -> None:
    statement = "Consolidated balance sheets\nTotal assets 15,803 17,504\nGoodwill 1,383 1,384"
    assert figure_share(statement) == pytest.approx(2 / 3)
    assert figure_share("| Revenue | 1,234 |\n| --- | --- |") == 0.5
    assert figure_share("We opened 12 stores.\nMost are small.") == 0.0
    assert figure_share("") == 0.0
    assert asks_for_figure("How many stores did Best Buy open?")
    assert asks_for_figure("What was working capital in 2023?")  # a measure it names
    assert not asks_for_figure("Why does working capital matter?")
    assert not asks_for_figure("Who signed the report?")


def test_fusion_combines_scores_each_side_scaled_over_its_candidates() -> None:
    from docqa.search.retrieve import fuse

    lexical = [(1, 12.0), (2, 6.0), (5, 3.0)]
    vector = [(2, 0.8), (3, 0.4), (4, -0.2)]
    scores = fuse(vector, lexical, lexical_weight=0.4)
    assert scores == pytest.approx({1: 0.4, 2: 0.4 * 3 / 9 + 0.6, 3: 0.6 * 0.6, 4: 0.0, 5: 0.0})
    # A side that found nothing leaves the other's order as it is.
    assert list(fuse([], lexical)) == [1, 2, 5]
    # A single candidate, or candidates that all score alike, count fully, not as nothing.
    assert fuse([(7, 0.3)], [(7, 2.0)]) == pytest.approx({7: 1.0})
    assert fuse([(8, 0.5), (9, 0.5)], []) == pytest.approx({8: 0.5, 9: 0.5})


def _facts(first: int, count: int) -> str:
    """Paragraphs of numbered facts that tell chunks apart."""
    return "\n\n".join(
        f"Fact {n}: lighthouse keeper number {n} logged the tide, the wind and the ships "
        f"passing the harbour wall during watch {n}, as every keeper before had done."
        for n in range(first, first + count)
    )


async def test_a_source_is_its_best_chunk_with_its_neighbours_on_the_page(
    corpus: Corpus, pg_url: str, tmp_path: Path
) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    body = _facts(1, 40).replace(
        "Fact 9:", "Fact 9: the keeper saw a glowing blue whale breach beside the rocks. Fact 9b:"
    )
    pk = (await _ingest_texts(corpus, pg_url, tmp_path, owner, {"log": body}))["log"]
    async with corpus.db.session() as session:
        chunks = {
            row.seq: row
            for row in await session.execute(
                text("SELECT id, seq, page_start, text FROM chunks WHERE document_pk = :pk"),
                {"pk": pk},
            )
        }
    assert len({c.page_start for c in chunks.values()}) >= 2, "the test needs several pages"

    hits = await retrieval.retrieve(
        corpus.db,
        corpus.embedder,
        owner_id=owner,
        document_pks=[pk],
        question="Which keeper saw a glowing blue whale breach?",
        top_k=3,
    )
    assert "glowing blue whale" in hits[0].text
    widened = 0
    for hit in hits:
        anchor = next(c for c in chunks.values() if c.id == hit.chunk_id)
        same_page = [
            chunks[s]
            for s in (anchor.seq - 1, anchor.seq + 1)
            if s in chunks and chunks[s].page_start == anchor.page_start
        ]
        assert anchor.text in hit.text
        widened += bool(same_page)
        for neighbour in same_page:  # their first and last facts are in the source
            facts = re.findall(r"Fact \d+b?:", neighbour.text)
            assert facts[0] in hit.text
            assert facts[-1] in hit.text
        other_pages = [c for c in chunks.values() if c.page_start != anchor.page_start]
        for chunk in other_pages:
            inner = re.findall(r"Fact \d+b?:", chunk.text)[1:-1]  # not on an edge it may share
            assert not any(f"{fact} " in hit.text for fact in inner)
        assert len(set(re.findall(r"Fact \d+b?:", hit.text))) == len(
            re.findall(r"Fact \d+b?:", hit.text)
        ), "an overlap was written twice"
    assert widened, "no source had a neighbour on its page"


def test_neighbouring_chunks_merge_past_their_overlap() -> None:
    from types import SimpleNamespace as Row

    page = "Alpha one. Beta two. Gamma three. Delta four."
    first = Row(char_start=0, char_end=20, text=page[0:20], token_count=5, rects=[[0, 0, 1, 1]])
    second = Row(char_start=11, char_end=33, text=page[11:33], token_count=6, rects=[[0, 1, 1, 2]])
    # A table's later chunk starts with the table's header rows again, before its span.
    third = Row(char_start=34, char_end=45, text="| h |\n" + page[34:45], token_count=4, rects=[])
    text_, tokens, rects = retrieval.merge_chunks([third, second, first])
    assert text_ == "Alpha one. Beta two. Gamma three.\nDelta four."
    assert tokens == 15
    assert rects == [[0, 0, 1, 1], [0, 1, 1, 2]]
    # A chunk that lies inside another adds nothing.
    inside = Row(char_start=5, char_end=15, text=page[5:15], token_count=3, rects=[])
    assert retrieval.merge_chunks([first, inside])[0] == page[0:20]

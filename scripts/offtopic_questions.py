"""Write off-topic questions as unanswerable page-QA lines, each asked of documents drawn at random.

    python scripts/offtopic_questions.py ../shared/data/mmlongbench > offtopic.jsonl

Fifty questions that no document of a page-QA folder answers (general knowledge, how-to,
small talk, gibberish), each asked of three of the folder's documents drawn with a fixed seed, so
that runs compare. `docqa eval --answers FOLDER --questions offtopic.jsonl` then reports, as its
refusal rate, how often docqa says "not in your documents" rather than quoting unrelated text
(`make eval-offtopic`).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

QUESTIONS = (
    "What is the capital of France?",
    "How do I knit a scarf?",
    "Who won the FIFA World Cup in 2014?",
    "What is the boiling point of water at sea level?",
    "How many legs does a spider have?",
    "What is the recipe for banana bread?",
    "Who painted the Mona Lisa?",
    "How far is the Moon from the Earth?",
    "What is the tallest mountain in Africa?",
    "How do I change a flat tyre on a bicycle?",
    "What is the chemical symbol for gold?",
    "Who wrote Pride and Prejudice?",
    "What time does the sun set in Reykjavik in June?",
    "How do you say thank you in Japanese?",
    "What is the population of Brazil?",
    "How long should I boil an egg for a soft yolk?",
    "Which planet has the most moons?",
    "What is the best way to train a puppy to sit?",
    "Who was the first person to walk on the Moon?",
    "What is the speed of sound in air?",
    "How do I make sourdough starter?",
    "What are the rules of cricket?",
    "Which ocean is the deepest?",
    "What is the plot of Hamlet?",
    "How many bones are in the adult human body?",
    "What is the exchange rate between the euro and the yen today?",
    "Who composed the Four Seasons?",
    "How do I grow tomatoes on a balcony?",
    "What is the largest desert in the world?",
    "When did the Roman Empire fall?",
    "What is a good name for a goldfish?",
    "How do I fix a leaking kitchen tap?",
    "What is the weather forecast for tomorrow in Lisbon?",
    "Who discovered penicillin?",
    "What language is spoken in Brazil?",
    "How many strings does a violin have?",
    "What is the best pizza topping?",
    "Tell me a joke about penguins.",
    "What is the square root of 144?",
    "Which river flows through Cairo?",
    "How do I tie a bowline knot?",
    "Who is the lead singer of Coldplay?",
    "What do koalas eat?",
    "How do I get a stain out of a wool sweater?",
    "What is the national animal of Scotland?",
    "Hi, how are you today?",
    "asdf qwerty zxcv uiop",
    "Ua a m I I DUD lorem ipsum",
    "What is the meaning of life?",
    "Which wine goes well with grilled salmon?",
)
DOCUMENTS_PER_QUESTION = 3
SEED = 11


def main(folder: Path) -> None:
    manifest = folder / "questions.jsonl"
    documents = sorted(
        {json.loads(line)["document"] for line in manifest.read_text(encoding="utf-8").splitlines()}
    )
    draw = random.Random(SEED)
    for number, question in enumerate(QUESTIONS):
        for document in draw.sample(documents, DOCUMENTS_PER_QUESTION):
            row = {
                "id": f"offtopic-{number}-{document}",
                "document": document,
                "question": question,
                "answer": "Not answerable",
                "evidence_pages": [],
                "evidence_sources": [],
                "answerable": False,
            }
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mmlongbench"))

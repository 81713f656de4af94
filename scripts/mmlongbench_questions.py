"""Write MMLongBench-Doc's questions as page-QA lines, the unanswerable ones included.

    python scripts/mmlongbench_questions.py ../shared/data/mmlongbench > questions.jsonl

The folder's own questions.jsonl leaves out the questions whose answer is "Not answerable";
`docqa eval --answers` needs them, marked `"answerable": false`, to measure refusals.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path


def main(folder: Path) -> None:
    samples = json.loads((folder / "samples_copied_docs_only.json").read_text(encoding="utf-8"))
    for number, sample in enumerate(samples):
        answerable = sample["answer"].strip() != "Not answerable"
        pages = ast.literal_eval(sample.get("evidence_pages") or "[]")
        sources = ast.literal_eval(sample.get("evidence_sources") or "[]")
        row = {
            "id": f"mmlb-s{number}",
            "document": sample["doc_id"],
            "question": sample["question"],
            "answer": sample["answer"],
            "evidence_pages": pages,
            "evidence_sources": sources,
            "answerable": answerable,
        }
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mmlongbench"))

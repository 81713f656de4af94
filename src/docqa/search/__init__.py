"""Search: the lexical index (postings) written at ingest, and retrieval over it and the vectors.

- `index`: writes a document's postings and totals when it becomes ready.
- `lexical`: BM25 over the postings.
- `vector`: nearest neighbours by cosine distance.
- `retrieve`: both sides at once, fused, as the ask path uses them.
"""

"""The bundled embedding model: bf16 weights give the vectors fp32 gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from docqa.ingest.embed import LocalEmbedder

PASSAGES = [
    "Net sales rose 3.5 percent to 32.8 billion dollars, led by the safety and graphics unit.",
    "The Danube flows through ten countries before it reaches the Black Sea.",
    "Patients in the treatment arm reported fewer side effects after twelve weeks.",
]
QUESTION = "How much did net sales grow?"


def test_bf16_weights_give_the_fp32_vectors(local_embedder: Any) -> None:
    """Pooling and normalising stay in float32 (a hook on the transformer): without it, mean
    pooling in bfloat16 alone moves a query's vector to a cosine of about 0.9988."""
    fp32 = LocalEmbedder("fp32")
    bf16 = local_embedder if local_embedder.precision == "bf16" else LocalEmbedder("bf16")
    pairs = [
        (fp32.embed_documents(PASSAGES), bf16.embed_documents(PASSAGES)),
        (fp32.embed_query(QUESTION)[None, :], bf16.embed_query(QUESTION)[None, :]),
    ]
    for exact, fast in pairs:
        assert fast.dtype == np.float32
        assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
        assert (exact * fast).sum(axis=1).min() > 0.9999
    # And the nearest passage does not change.
    query = bf16.embed_query(QUESTION)
    assert int(np.argmax(bf16.embed_documents(PASSAGES) @ query)) == 0

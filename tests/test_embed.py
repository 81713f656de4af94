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


def test_a_call_split_across_lanes_gives_each_text_its_own_vector_in_order(
    local_embedder: Any,
) -> None:
    """Batches of two, run side by side on two one-core lanes, against one batch of all."""
    lanes = LocalEmbedder(local_embedder.precision, batch_size=2, lanes=2)
    lanes._model = local_embedder.model  # the same weights, loaded once
    texts = [*PASSAGES, QUESTION, "A fifth text, alone in the last batch."]
    split = lanes.embed_documents(texts)
    whole = local_embedder.embed_documents(texts)
    assert split.shape == whole.shape == (5, 384)
    # Each row is its own text's vector (batches pad differently, so not bit for bit).
    assert (split * whole).sum(axis=1).min() > 0.9999
    assert lanes.embed_documents([]).shape == (0, 384)

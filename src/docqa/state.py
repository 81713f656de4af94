"""What one API process holds for its lifetime, built by `create_app`'s lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import procrastinate

from docqa.answer import Answerer
from docqa.blobs import BlobStore
from docqa.db.engine import Database
from docqa.ingest.embed import Embedder
from docqa.progress import ProgressHub
from docqa.search.rerank import HttpReranker
from docqa.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    store: BlobStore
    jobs: procrastinate.App
    hub: ProgressHub
    embedder: Embedder
    worker_task: asyncio.Task[None] | None = field(default=None)
    answerer: Answerer | None = field(default=None)
    reranker: HttpReranker | None = field(default=None)  # None: reranking is off

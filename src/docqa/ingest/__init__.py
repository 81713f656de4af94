"""Ingestion: extract text page by page, chunk it, embed it, index it."""

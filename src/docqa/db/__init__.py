"""Persistence: the schema, the engine, the embedded server and migrations."""

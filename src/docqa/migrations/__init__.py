"""Alembic migrations; `docqa migrate` applies them."""

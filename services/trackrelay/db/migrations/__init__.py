"""Alembic migrations of the order store (run by ``trackrelay migrate``)."""

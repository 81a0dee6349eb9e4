"""Alembic migrations of the metadata schema, shipped with the package and run on every open."""

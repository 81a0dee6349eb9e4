"""Metadata store: SQLAlchemy models, the database engine and the queries both sides need."""

"""Alembic environment: migrations run on the connection medsearch hands over (or on -x url=... from the CLI)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from retrieval.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # `alembic -x url=postgresql+psycopg://... upgrade head` by hand
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database as: alembic -x url=SQLALCHEMY_URL ...")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

"""Alembic environment: driftloop passes its own connection; no alembic.ini is needed."""

from alembic import context

from driftloop.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only for `alembic revision --autogenerate` by hand
    from sqlalchemy import create_engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url") or "").connect()

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table="driftloop_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: run by ``scheduler.store.database.migrate`` with a live connection, no alembic.ini."""

from alembic import context

from scheduler.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

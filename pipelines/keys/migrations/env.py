"""Alembic's environment for the key database: runs on the connection `KeyStore.open` passes."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pipelines.keys.schema import Base

# The version table is named for us: a PostgreSQL database shared with other applications
# may already hold an `alembic_version` of theirs.
VERSION_TABLE = "ragserve_alembic_version"


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the key database migrates through KeyStore.open (pipelines.keys), "
            "which passes its connection; there is no alembic.ini to run it from"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters a table by copying it
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("the key database has no offline (SQL script) migrations")
run_migrations_online()

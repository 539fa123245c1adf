"""Alembic environment for the feedback store.

The store runs migrations itself when it is opened (:func:`kuaimod_open.loop.migrations.upgrade`
hands this script a connection that already holds the migration lock). The ``alembic`` command line
works too, for writing a new revision from a change to :mod:`kuaimod_open.loop.schema`::

    export KUAIMOD_DB=sqlite:///scratch.db
    alembic -c kuaimod_open/loop/migrations/alembic.ini upgrade head
    alembic -c kuaimod_open/loop/migrations/alembic.ini revision --autogenerate --rev-id m005_what -m "what"
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from kuaimod_open.loop.migrations import include_name
from kuaimod_open.loop.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _configure(conn: sa.Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        include_name=include_name,
        render_as_batch=conn.dialect.name == "sqlite",  # SQLite alters tables by copying them
        transaction_per_migration=False,
    )


if context.is_offline_mode():
    context.configure(url=os.environ.get("KUAIMOD_DB", "sqlite:///kuaimod.db"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(os.environ.get("KUAIMOD_DB", "sqlite:///kuaimod.db"))
    with engine.begin() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()

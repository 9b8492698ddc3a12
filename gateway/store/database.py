"""Engines, sessions and schema migrations for SQLite and PostgreSQL.

>>> engine = create_database_engine("sqlite:///var/gateway.sqlite3")
>>> migrate(engine)                 # alembic upgrade head
>>> with session_factory(engine)() as session: ...
>>> session.execute(insert_into(session, Source).values(...).on_conflict_do_nothing())
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def insert_into(session: Session, entity: Any) -> Any:
    """An INSERT of ``entity`` in the session's own dialect, which has ``ON CONFLICT``
    (``on_conflict_do_nothing``, ``on_conflict_do_update``): both our databases do."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(entity)
    return sqlite.insert(entity)


def create_database_engine(url: str, **options: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    A bare ``sqlite:///path`` creates the folder it lives in.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below emit BEGIN, not the driver.
            connection.isolation_level = None
            cursor = connection.cursor()
            # WAL lets readers go on while one writer commits; several gateway
            # processes on one machine share the file safely.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock at BEGIN, so two processes updating the same
            # row queue up instead of failing with "database is locked" later.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Connections are recycled before PostgreSQL or a proxy would drop them;
    # pre-ping would cost a round trip on every checkout from the pool.
    return create_engine(url, pool_recycle=1800, pool_size=10, max_overflow=20, **options)


def session_factory(engine: Engine, info: dict[str, Any] | None = None) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit; ``info`` is every session's
    ``session.info`` (what the process is configured to do, for code deep in a transaction)."""
    return sessionmaker(engine, expire_on_commit=False, info=info or {})


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (``alembic upgrade``).

    Several gateway processes starting at once on one SQLite file (``serve
    --workers N``) each migrate it: a lock file beside the database makes them
    take turns, so the second finds it up to date instead of failing halfway.
    """
    config = alembic_config(engine)
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    with contextlib.ExitStack() as turns:
        if database and database != ":memory:":
            lock = turns.enter_context(open(f"{database}.migrate-lock", "w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()

"""Connecting to the state database: engines tuned for concurrent loop threads, and migrations.

SQLite (the default, ``sqlite:///<workspace>/state.db``) runs in WAL mode with a busy timeout, and
every writing transaction starts with ``BEGIN IMMEDIATE``: concurrent writers then queue on the busy
timeout instead of failing with "database is locked" when a read transaction turns into a write.
PostgreSQL is used by URL (``postgresql+psycopg://user@host/db``), with connections checked before use
so that a database restart costs nothing but a reconnect.
"""

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
STATE_FILE = "state.db"
SQLITE_BUSY_TIMEOUT = 30.0
WRITE_OPTION = "peach_write"


def default_url(workspace: Path) -> str:
    """The default state database: a SQLite file in the workspace."""
    return f"sqlite:///{Path(workspace).resolve() / STATE_FILE}"


def build_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for ``url`` with the settings concurrent loop threads need."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
    if parsed.database in (None, "", ":memory:"):  # one shared connection, or each would see its own db
        engine = create_engine(parsed, connect_args=connect_args, poolclass=StaticPool)
    else:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args=connect_args, pool_timeout=SQLITE_BUSY_TIMEOUT)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    _SQLITE_WRITERS[engine] = threading.RLock()
    return engine


# SQLite has one writer at a time: this process's writers queue here, before taking a pooled connection,
# instead of sleeping in SQLite's busy handler with a connection each (hundreds of loop threads would
# exhaust the pool). The busy timeout still covers other processes (the CLI's ``trigger``).
_SQLITE_WRITERS: "weakref.WeakKeyDictionary[Engine, threading.RLock]" = weakref.WeakKeyDictionary()


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A connection whose transactions take the write lock up front on SQLite (no-op elsewhere)."""
    lock = _SQLITE_WRITERS.get(engine) if engine.dialect.name == "sqlite" else None
    with lock or nullcontext(), engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        yield connection


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest migration (creates every table on a new database)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with writing(engine) as connection, connection.begin():
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver must not BEGIN on its own: _sqlite_begin does
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

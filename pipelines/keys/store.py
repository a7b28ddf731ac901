"""`KeyStore`: API keys in a SQL database (SQLite by default, PostgreSQL for replicas) through
SQLAlchemy 2, its schema kept by the Alembic migrations beside it."""

from __future__ import annotations

import errno
import hmac
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, or_, select, text, update
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from pipelines.access import Role
from pipelines.errors import ConfigError, DependencyUnavailable, StorageUnavailable, Unauthorized
from pipelines.keys.records import (
    ApiKey,
    KeyNotFound,
    check_new_key,
    check_role,
    hash_token,
    key_id_of,
    new_id,
    new_token,
    token_id,
)
from pipelines.keys.schema import ApiKeyRow
from pipelines.keys.usage import UsageDay, add_usage, usage_days
from pipelines.stores.faults import reason_of

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
# last_used_at is a hint for people, not an audit trail: one write a minute per key at most.
TOUCH_INTERVAL: Final = timedelta(seconds=60)
# How long SQLite waits for another process's write (a `rag keys create` beside the server).
BUSY_TIMEOUT_MS: Final = 10_000
# Serialises migrations of processes sharing a PostgreSQL database (any fixed 64-bit number).
_PG_MIGRATION_LOCK: Final = 0x7261677365727665  # "ragserve"
_WRITE: Final = "ragserve_write"  # execution option: this transaction will write
# Alembic keeps its running environment in a module global: one migration at a time here.
_MIGRATING = threading.Lock()


class KeyStore:
    """API keys as rows. Synchronous and thread-safe (each call takes a pooled connection):
    the service calls it from worker threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(
            engine.execution_options(**{_WRITE: True}), expire_on_commit=False
        )
        self._touched: dict[str, datetime] = {}
        self._touched_lock = threading.Lock()

    @classmethod
    def open(cls, url: str) -> KeyStore:
        """The store at a SQLAlchemy URL, its schema migrated to the newest revision. Safe to
        call again and from several processes at once (the migration takes a lock)."""
        engine = _engine(url)
        try:
            _migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self._engine.dispose()

    def create(
        self,
        *,
        name: str,
        role: Role,
        collections: Sequence[str],
        groups: Sequence[str] = (),
        expires_at: datetime | None = None,
        requests_per_minute: int | None = None,
        tokens_per_day: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key: its record and its token, which is shown this once (only its hash is
        stored). InvalidInput names the field that was wrong."""
        now = datetime.now(UTC)
        new = check_new_key(
            name=name,
            role=role,
            collections=collections,
            groups=groups,
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            tokens_per_day=tokens_per_day,
            now=now,
        )
        for attempt in range(3):  # 48-bit ids: a collision is a once-in-a-lifetime retry
            key_id = new_id()
            token = new_token(key_id)
            row = ApiKeyRow(
                id=key_id,
                token_hash=hash_token(token),
                name=new.name,
                role=new.role,
                collections=list(new.collections),
                groups=list(new.groups),
                created_at=now,
                expires_at=new.expires_at,
                revoked_at=None,
                last_used_at=None,
                requests_per_minute=new.requests_per_minute,
                tokens_per_day=new.tokens_per_day,
            )
            try:
                with self._session(write=True) as session:
                    session.add(row)
                return _record(row), token
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        """Every key, oldest first; revoked ones unless `include_revoked` is False."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self._session() as session:
            return [_record(row) for row in session.scalars(query)]

    def get(self, key_id: str) -> ApiKey:
        """One key by its id (or its listing prefix `rag_<id>`); KeyNotFound."""
        found = key_id_of(key_id)
        if found is None:
            raise KeyNotFound(None)
        with self._session() as session:
            row = session.get(ApiKeyRow, found)
            if row is None:
                raise KeyNotFound(found)
            return _record(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good (the next request with it is a 401). Revoking it again
        keeps the first revocation's time. KeyNotFound."""
        found = key_id_of(key_id)
        if found is None:
            raise KeyNotFound(None)
        with self._session(write=True) as session:
            session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == found, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = session.get(ApiKeyRow, found, populate_existing=True)
            if row is None:
                raise KeyNotFound(found)
            return _record(row)

    def authenticate(self, token: str, *, now: datetime | None = None) -> ApiKey:
        """The active key a token belongs to. Unauthorized says which check failed
        (malformed, unknown, revoked, expired), never repeating the token."""
        key_id = token_id(token)
        if key_id is None:
            raise Unauthorized(
                "malformed API key: not a ragserve API key (those look like 'rag_<id>_<secret>')"
            )
        with self._session() as session:
            row = session.get(ApiKeyRow, key_id)
            # The row is found by the public id; the secret is then checked in constant time.
            if row is None or not hmac.compare_digest(row.token_hash, hash_token(token)):
                raise Unauthorized("unknown API key")
            key = _record(row)
        if key.revoked_at is not None:
            raise Unauthorized(f"API key {key.id} was revoked")
        if key.status(now) == "expired":
            assert key.expires_at is not None
            raise Unauthorized(f"API key {key.id} expired at {key.expires_at.isoformat()}")
        return key

    def has_keys(self) -> bool:
        """Whether any key was ever created: revoked ones count, so revoking every key does
        not open the server."""
        with self._session() as session:
            return session.scalars(select(ApiKeyRow.id).limit(1)).first() is not None

    def touch(self, key_id: str, *, now: datetime | None = None) -> None:
        """Record that a key was used: at most one write per key per TOUCH_INTERVAL. This
        process remembers the time the database holds, so most calls cost nothing; the
        UPDATE's condition holds back other processes. An unknown id is ignored."""
        now = now or datetime.now(UTC)
        with self._touched_lock:
            last = self._touched.get(key_id)
        if last is not None and last <= now < last + TOUCH_INTERVAL:
            return
        with self._session(write=True) as session:
            connection = session.connection()
            written = connection.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.id == key_id,
                    or_(
                        ApiKeyRow.last_used_at.is_(None),
                        ApiKeyRow.last_used_at <= now - TOUCH_INTERVAL,
                    ),
                )
                .values(last_used_at=now)
            )
            # Not written: another process did within the interval; remember its time.
            held = (
                now
                if written.rowcount
                else connection.scalar(select(ApiKeyRow.last_used_at).where(ApiKeyRow.id == key_id))
            )
        if held is not None:
            with self._touched_lock:
                self._touched[key_id] = held

    def record_usage(
        self,
        key_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        reference_cost_usd: float,
        now: datetime | None = None,
    ) -> None:
        """Count one answer on its key's total for the UTC day (`now`, default: now)."""
        day = (now or datetime.now(UTC)).astimezone(UTC).date()
        added = UsageDay(
            key_id, day, 1, prompt_tokens, completion_tokens, cost_usd, reference_cost_usd
        )
        with self._session(write=True) as session:
            add_usage(session, added)

    def usage(self, since: date, until: date, *, key_id: str | None = None) -> Sequence[UsageDay]:
        """The daily totals from `since` to `until` (UTC days, both included) of one key, or
        of every key; by key, then day."""
        with self._session() as session:
            return usage_days(session, since, until, key_id)

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """A transaction, committed at the end; a database that cannot be reached is a 503."""
        try:
            with (self._write if write else self._read).begin() as session:
                yield session
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(self._engine.url, exc) from exc


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        role=check_role(row.role),
        collections=tuple(row.collections),
        groups=tuple(row.groups),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        requests_per_minute=row.requests_per_minute,
        tokens_per_day=row.tokens_per_day,
    )


def database_url(url: str) -> URL:
    """A SQLAlchemy URL with our drivers: `postgresql://` (and `postgres://`) use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            "RAG_DATABASE__URL is not a database URL: expected sqlite:///<path> or "
            "postgresql://<user>@<host>/<database>"
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _engine(url: str) -> Engine:
    parsed = database_url(url)
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # One shared connection: each new one would be a new, empty in-memory database.
            options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        else:
            _make_parent(Path(parsed.database))
    else:
        options = {"pool_pre_ping": True}  # a restarted server's dead connections are dropped
    try:
        engine = create_engine(parsed, **options)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"unsupported key database {parsed.drivername!r}: use sqlite or postgresql"
        ) from exc
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailable(
            "create the key database's directory", str(path.parent), exc.strerror or str(exc)
        ) from exc
    # SQLite in WAL mode writes beside the file (-wal, -shm) even to read: a read-only data
    # dir is said as such here, not as SQLite's "unable to open database file".
    for where in (path.parent, path):
        if where.exists() and not os.access(where, os.W_OK):
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            raise StorageUnavailable(
                "open the key database", str(path), reason_of(denied) or "permission denied"
            )


def _sqlite_setup(engine: Engine) -> None:
    """WAL (readers never wait for a writer) and a busy timeout (a writer waits its turn) let
    the CLI write while the server reads. pysqlite's own transaction handling is switched off
    so SQLAlchemy's BEGIN covers DDL too (the migrations are then atomic), and a writing
    transaction takes the write lock first (BEGIN IMMEDIATE) instead of failing halfway."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL's durable-enough setting
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision in one transaction, holding a lock other
    processes wait on: the write lock on SQLite, an advisory lock on PostgreSQL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    try:
        with _MIGRATING, engine.execution_options(**{_WRITE: True}).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (OperationalError, InterfaceError) as exc:
        raise _unavailable(engine.url, exc) from exc
    except CommandError as exc:
        raise ConfigError(
            f"cannot migrate the key database {_shown(engine.url)}: {exc} (was it made by a "
            "newer ragserve?)"
        ) from exc


def _unavailable(url: URL, exc: OperationalError | InterfaceError) -> DependencyUnavailable:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    return DependencyUnavailable(f"the key database {_shown(url)} is unavailable: {reason}")


def _shown(url: URL) -> str:
    """A URL fit for messages and logs: never its password."""
    return url.render_as_string(hide_password=True)

"""The key store (keys and usage totals) on SQLite and on a real PostgreSQL server: the same
tests on both."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from pipelines.access import Access
from pipelines.errors import ConfigError, DependencyUnavailable, InvalidInput, Unauthorized
from pipelines.keys import ApiKey, KeyNotFound, KeyStore, UsageDay
from pipelines.keys.records import hash_token
from pipelines.keys.store import MIGRATIONS, _engine
from tests.support.postgres import dump_text, fresh_database, postgres_server
from tests.support.sockets import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty key database: an SQLite file in a dir not made yet, or a new PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'ragserve.db'}"
    return fresh_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(url: str) -> Iterator[KeyStore]:
    keys = KeyStore.open(url)
    yield keys
    keys.close()


def raw_database(url: str) -> bytes:
    """What the database holds, as stored: SQLite's files (with the WAL), or every column of
    every PostgreSQL row as text."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    return dump_text(url).encode()


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def test_created_key_authenticates_and_listing_shows_prefix_not_secret(store: KeyStore) -> None:
    key, token = store.create(name="support-bot", role="read", collections=["alpha", "beta"])
    assert token.startswith(f"rag_{key.id}_")
    assert len(secret_of(token)) == 43
    assert store.authenticate(token) == key
    assert key.status() == "active"
    assert key.created_at.tzinfo is not None
    assert key.created_at.utcoffset() == timedelta(0)

    (listed,) = store.list()
    assert listed == key
    assert listed.prefix == f"rag_{key.id}"
    assert secret_of(token) not in repr(listed)
    assert store.get(key.id) == key
    assert store.get(key.prefix) == key


def test_database_holds_only_the_hash_of_a_token(store: KeyStore, url: str) -> None:
    tokens = [
        store.create(name=f"key-{i}", role="write", collections=["alpha"])[1] for i in range(3)
    ]
    for token in tokens:
        store.authenticate(token)
    raw = raw_database(url)
    for token in tokens:
        assert hash_token(token).encode() in raw
        assert token.encode() not in raw
        assert secret_of(token).encode() not in raw


def test_revoked_key_is_refused_on_the_next_authenticate(store: KeyStore) -> None:
    key, token = store.create(name="leaver", role="write", collections=["alpha"])
    store.authenticate(token)
    revoked = store.revoke(key.id)
    assert revoked.status() == "revoked"
    with pytest.raises(Unauthorized, match="revoked") as caught:
        store.authenticate(token)
    assert secret_of(token) not in caught.value.message


def test_revoking_twice_keeps_the_first_time(store: KeyStore) -> None:
    key, _ = store.create(name="leaver", role="read", collections=["alpha"])
    first = store.revoke(key.id)
    assert first.revoked_at is not None
    assert store.revoke(key.id).revoked_at == first.revoked_at


def test_expired_key_is_refused(store: KeyStore) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    key, token = store.create(name="temp", role="read", collections=["alpha"], expires_at=expires)
    assert store.authenticate(token, now=expires - timedelta(seconds=1)) == key
    later = expires + timedelta(seconds=1)
    assert key.status(later) == "expired"
    with pytest.raises(Unauthorized, match="expired"):
        store.authenticate(token, now=later)


def test_unknown_and_malformed_tokens_get_distinct_messages(store: KeyStore) -> None:
    key, token = store.create(name="real", role="read", collections=["alpha"])
    wrong_secret = f"rag_{key.id}_{'A' * 43}"
    unknown_id = f"rag_{'0' * 12}_{secret_of(token)}"
    messages = {}
    for what, bad in (("wrong secret", wrong_secret), ("unknown id", unknown_id)):
        with pytest.raises(Unauthorized, match="unknown API key") as caught:
            store.authenticate(bad)
        messages[what] = caught.value.message
    for bad in ("", "hunter2", token[:-1], token + "x", "Bearer " + token, token.upper()):
        with pytest.raises(Unauthorized, match="not a ragserve API key") as caught:
            store.authenticate(bad)
        assert bad not in caught.value.message or not bad
        messages["malformed"] = caught.value.message
    assert len(set(messages.values())) == 2
    assert all(secret_of(token) not in m for m in messages.values())


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"role": "owner"}, "role"),
        ({"collections": []}, "collections"),
        ({"collections": "alpha"}, "collections"),
        ({"collections": ["../etc"]}, "collections"),
        ({"collections": ["has space"]}, "collections"),
        ({"groups": ["-dash-first"]}, "groups"),
        ({"groups": ["a" * 65]}, "groups"),
        ({"expires_at": datetime.now(UTC) - timedelta(minutes=1)}, "expires_at"),
        ({"expires_at": datetime(2099, 1, 1)}, "expires_at"),  # no time zone
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"tokens_per_day": -5}, "tokens_per_day"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else v,
)
def test_invalid_key_fields_are_refused_naming_the_field(
    store: KeyStore, fields: dict[str, Any], named: str
) -> None:
    args: dict[str, Any] = {"name": "k", "role": "read", "collections": ["alpha"], **fields}
    with pytest.raises(InvalidInput, match=named):
        store.create(**args)
    assert not store.has_keys()


def test_admin_key_reads_everything(store: KeyStore) -> None:
    key, _ = store.create(name="root", role="admin", collections=["alpha"], groups=["hr"])
    assert key.collections == ("*",)
    assert key.access() == Access()
    reader, _ = store.create(name="r", role="read", collections=["alpha", "alpha"], groups=["hr"])
    assert reader.collections == ("alpha",)
    assert reader.access() == Access.of(["alpha"], ["hr"])
    assert reader.access().allows("alpha")
    assert not reader.access().allows("beta")
    everything, _ = store.create(name="all", role="read", collections=["*"])
    assert everything.access().collections is None
    assert everything.access().groups == frozenset()


def test_times_are_stored_as_utc_and_read_back_aware(store: KeyStore) -> None:
    local = timezone(timedelta(hours=2))
    expires = datetime(2099, 6, 1, 12, 30, tzinfo=local)
    key, _ = store.create(
        name="tz",
        role="read",
        collections=["alpha"],
        expires_at=expires,
        requests_per_minute=60,
        tokens_per_day=10_000,
    )
    stored = store.get(key.id)
    assert stored.expires_at == expires
    assert stored.expires_at is not None
    assert stored.expires_at.utcoffset() == timedelta(0)
    assert stored.expires_at.hour == 10
    assert (stored.requests_per_minute, stored.tokens_per_day) == (60, 10_000)


def test_list_hides_revoked_keys_only_when_asked(store: KeyStore) -> None:
    kept, _ = store.create(name="kept", role="read", collections=["alpha"])
    gone, _ = store.create(name="gone", role="read", collections=["alpha"])
    store.revoke(gone.id)
    assert [k.id for k in store.list(include_revoked=False)] == [kept.id]
    assert [k.id for k in store.list()] == [kept.id, gone.id]


def test_unknown_ids_are_not_found_and_never_echo_what_was_passed(store: KeyStore) -> None:
    _, token = store.create(name="k", role="read", collections=["alpha"])
    with pytest.raises(KeyNotFound, match="0123456789ab"):
        store.get("0123456789ab")
    with pytest.raises(KeyNotFound):
        store.revoke("0123456789ab")
    with pytest.raises(KeyNotFound) as caught:
        store.revoke(token)
    assert secret_of(token) not in caught.value.message
    assert caught.value.code == "key_not_found"
    assert caught.value.status == 404


def test_has_keys_stays_true_after_every_key_is_revoked(store: KeyStore) -> None:
    assert not store.has_keys()
    keys = [store.create(name=f"k{i}", role="read", collections=["alpha"])[0] for i in range(2)]
    for key in keys:
        store.revoke(key.id)
    assert store.has_keys()


def test_touch_writes_last_used_at_most_once_a_minute(store: KeyStore, url: str) -> None:
    key, _ = store.create(name="k", role="read", collections=["alpha"])
    assert key.last_used_at is None
    t0 = datetime.now(UTC)
    store.touch(key.id, now=t0)
    assert store.get(key.id).last_used_at == t0
    store.touch(key.id, now=t0 + timedelta(seconds=30))
    assert store.get(key.id).last_used_at == t0
    # Another process (its own store) is held back by the database's condition alone.
    other = KeyStore.open(url)
    try:
        other.touch(key.id, now=t0 + timedelta(seconds=59))
        assert store.get(key.id).last_used_at == t0
        other.touch(key.id, now=t0 + timedelta(seconds=61))
        assert store.get(key.id).last_used_at == t0 + timedelta(seconds=61)
    finally:
        other.close()
    store.touch("0123456789ab", now=t0)  # an unknown id: nothing to do, no error


def test_opening_again_is_idempotent_and_stores_share_the_database(url: str) -> None:
    first = KeyStore.open(url)
    second = KeyStore.open(url)
    try:
        key, token = first.create(name="k", role="write", collections=["alpha"])
        assert second.authenticate(token) == key
        second.revoke(key.id)
        with pytest.raises(Unauthorized, match="revoked"):
            first.authenticate(token)
    finally:
        first.close()
        second.close()
    again = KeyStore.open(url)
    try:
        assert [k.id for k in again.list()] == [key.id]
    finally:
        again.close()


def test_processes_opening_a_new_database_at_once_all_succeed(url: str) -> None:
    script = "import sys; from pipelines.keys import KeyStore; KeyStore.open(sys.argv[1]).close()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store = KeyStore.open(url)
    try:
        assert not store.has_keys()
    finally:
        store.close()


def test_writers_and_readers_in_threads_do_not_trip_over_each_other(url: str) -> None:
    """The server authenticates in worker threads while `rag keys create` (another store,
    another connection) writes."""
    server, cli = KeyStore.open(url), KeyStore.open(url)
    try:
        key, token = cli.create(name="seed", role="read", collections=["alpha"])

        def read(i: int) -> ApiKey:
            found = server.authenticate(token)
            server.touch(found.id, now=datetime.now(UTC) + timedelta(minutes=i))
            return found

        def write(i: int) -> ApiKey:
            return cli.create(name=f"k{i}", role="read", collections=["alpha"])[0]

        with ThreadPoolExecutor(8) as pool:
            reads = [pool.submit(read, i) for i in range(40)]
            writes = [pool.submit(write, i) for i in range(20)]
            assert all(f.result(timeout=60).id == key.id for f in reads)
            assert len({f.result(timeout=60).id for f in writes}) == 20
        assert len(server.list()) == 21
    finally:
        server.close()
        cli.close()


def test_unreachable_database_is_unavailable_without_showing_the_password() -> None:
    closed = free_port()
    with pytest.raises(DependencyUnavailable) as caught:
        KeyStore.open(f"postgresql://rag:s3cret-pw@127.0.0.1:{closed}/keys")
    assert caught.value.status == 503
    assert "s3cret-pw" not in caught.value.message
    assert f"127.0.0.1:{closed}" in caught.value.message


def test_a_url_that_is_no_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RAG_DATABASE__URL"):
        KeyStore.open("not a url")


# -- usage totals (the `key_usage` table, migration 0002) -----------------------------------


def test_usage_adds_up_per_key_and_utc_day(store: KeyStore) -> None:
    late = datetime(2026, 12, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC
    for now, key_id in ((late, "aaaaaaaaaaaa"), (late, "aaaaaaaaaaaa"), (late, "bootstrap")):
        store.record_usage(
            key_id,
            prompt_tokens=42,
            completion_tokens=5,
            cost_usd=0.25,
            reference_cost_usd=0.5,
            now=now,
        )
    store.record_usage(
        "aaaaaaaaaaaa",
        prompt_tokens=1,
        completion_tokens=2,
        cost_usd=0.125,
        reference_cost_usd=0.0,
        now=late - timedelta(days=1),
    )
    december = store.usage(date(2026, 11, 1), date(2026, 12, 31))
    assert [(u.key_id, u.day) for u in december] == [
        ("aaaaaaaaaaaa", date(2026, 12, 1)),
        ("aaaaaaaaaaaa", date(2026, 12, 2)),  # the UTC day, not the local one
        ("bootstrap", date(2026, 12, 2)),
    ]
    assert december[1] == UsageDay("aaaaaaaaaaaa", date(2026, 12, 2), 2, 84, 10, 0.5, 1.0)
    assert december[0] == UsageDay("aaaaaaaaaaaa", date(2026, 12, 1), 1, 1, 2, 0.125, 0.0)
    # Both ends are included; one key only when asked.
    (only,) = store.usage(date(2026, 12, 2), date(2026, 12, 2), key_id="bootstrap")
    assert only.requests == 1
    assert store.usage(date(2026, 12, 3), date(2026, 12, 31)) == []


def test_usage_increments_from_many_threads_and_stores_lose_none(url: str) -> None:
    """Replicas (or the server's worker threads) charging one key at once: the upsert adds,
    never reads then writes."""
    stores = [KeyStore.open(url), KeyStore.open(url)]
    try:

        def charge(i: int) -> None:
            stores[i % 2].record_usage(
                "cccccccccccc",
                prompt_tokens=10,
                completion_tokens=1,
                cost_usd=0.5,
                reference_cost_usd=0.25,
            )

        with ThreadPoolExecutor(8) as pool:
            for done in [pool.submit(charge, i) for i in range(60)]:
                done.result(timeout=60)
        today = datetime.now(UTC).date()
        (total,) = stores[0].usage(today - timedelta(days=1), today + timedelta(days=1))
        assert (total.requests, total.prompt_tokens, total.completion_tokens) == (60, 600, 60)
        assert (total.cost_usd, total.reference_cost_usd) == (30.0, 15.0)
    finally:
        for keys in stores:
            keys.close()


def test_a_database_made_before_usage_is_migrated_on_open(url: str) -> None:
    """A key database at revision 0001 (before usage totals) keeps its keys and gains the
    usage table when the new version opens it."""
    engine = _engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    old = KeyStore(_engine(url))  # the schema as 0001 left it: keys, no usage
    key, token = old.create(name="before", role="read", collections=["alpha"])
    with pytest.raises(Exception, match="key_usage"):
        old.usage(date(2026, 1, 1), date(2026, 1, 1))
    old.close()
    store = KeyStore.open(url)
    try:
        assert store.authenticate(token) == key
        store.record_usage(
            "dddddddddddd", prompt_tokens=1, completion_tokens=1, cost_usd=0, reference_cost_usd=0
        )
        today = datetime.now(UTC).date()
        assert [u.requests for u in store.usage(today, today)] == [1]
    finally:
        store.close()

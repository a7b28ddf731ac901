"""The API key as a record: the domain `ApiKey` (no secret), the token format and its hash,
and the checks every new key passes."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeGuard

from pipelines.access import ROLES, Access, Role
from pipelines.errors import InvalidInput, NotFound
from pipelines.stores.schema import check_collection_name

KeyStatus = Literal["active", "revoked", "expired"]

# A token is `rag_<id>_<secret>`: the prefix makes a leaked key recognisable (secret
# scanners, log greps), the id finds its row without a secret-dependent lookup, the secret is
# 32 random bytes (256 bits) in URL-safe base64 (43 characters).
TOKEN_PREFIX = "rag_"
ID_BYTES = 6  # 12 lowercase hex characters: the public id
SECRET_BYTES = 32
_ID = re.compile(r"[0-9a-f]{12}")
_TOKEN = re.compile(r"rag_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_NAME_CHARS = 64
MAX_SCOPE_ITEMS = 256  # collections or groups on one key


@dataclass(frozen=True)
class ApiKey:
    """One key as listings, logs and the auth check see it. The secret is not here: only the
    token handed out once at creation holds it, and the database only its hash."""

    id: str
    name: str
    role: Role
    collections: tuple[str, ...]  # names, or ("*",) for every collection (always for admin)
    groups: tuple[str, ...]  # the document groups it reads beyond public documents
    created_at: datetime  # every time tz-aware UTC
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    requests_per_minute: int | None
    tokens_per_day: int | None

    @property
    def prefix(self) -> str:
        """How the key's token starts: enough to recognise it, nothing to use it."""
        return f"{TOKEN_PREFIX}{self.id}"

    def status(self, now: datetime | None = None) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def access(self) -> Access:
        """What the key reads: an admin everything (every document too), any other key its
        collections, and in them public documents plus those of its groups."""
        if self.role == "admin":
            return Access()
        return Access.of(self.collections, self.groups)


class KeyNotFound(NotFound):
    code = "key_not_found"

    def __init__(self, key_id: str | None) -> None:
        # Only a well-formed id is echoed: whatever else was passed might be a secret.
        super().__init__(
            f"no API key with id '{key_id}'"
            if key_id is not None
            else "no such API key: an id is 12 hex characters, as `rag keys list` shows"
        )
        self.key_id = key_id


def new_id() -> str:
    return secrets.token_hex(ID_BYTES)


def new_token(key_id: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_token(token: str) -> str:
    """SHA-256 of the whole token, hex. A fast unsalted hash is enough here: the secret has
    256 bits of entropy, so there is no dictionary to try and brute force is hopeless; slow
    password hashes (bcrypt, argon2) guard low-entropy human passwords and would only add
    latency to every request. The id inside the token keeps equal secrets' hashes apart."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str | None:
    """The id inside a well-formed token; None for anything that is not a ragserve key."""
    match = _TOKEN.fullmatch(token)
    return match["id"] if match else None


def key_id_of(ref: str) -> str | None:
    """An id as a user gives it: the id itself or its listing prefix `rag_<id>`."""
    ref = ref.strip()
    ref = ref.removeprefix(TOKEN_PREFIX)
    return ref if _ID.fullmatch(ref) else None


def as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class NewKey:
    """A key's fields as checked before it is stored."""

    name: str
    role: Role
    collections: tuple[str, ...]
    groups: tuple[str, ...]
    expires_at: datetime | None
    requests_per_minute: int | None
    tokens_per_day: int | None


def check_new_key(
    *,
    name: str,
    role: str,
    collections: Sequence[str],
    groups: Sequence[str],
    expires_at: datetime | None,
    requests_per_minute: int | None,
    tokens_per_day: int | None,
    now: datetime,
) -> NewKey:
    """Every field of a new key checked; InvalidInput names the field and what it accepts."""
    role = check_role(role)
    return NewKey(
        name=check_name(name),
        role=role,
        collections=("*",) if role == "admin" else check_collections(collections),
        groups=check_groups(groups),
        expires_at=check_expiry(expires_at, now),
        requests_per_minute=check_limit("requests_per_minute", requests_per_minute),
        tokens_per_day=check_limit("tokens_per_day", tokens_per_day),
    )


def check_role(role: str) -> Role:
    if not _is_role(role):
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def _is_role(role: str) -> TypeGuard[Role]:
    return role in ROLES


def check_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidInput("name must be a string")
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise InvalidInput(
            f"name must be 1-{MAX_NAME_CHARS} printable characters (no newlines or tabs)"
        )
    return name


def check_collections(collections: Sequence[str]) -> tuple[str, ...]:
    items = _items("collections", collections)
    if not items:
        raise InvalidInput("collections must name at least one collection, or '*' for all")
    if "*" in items:
        return ("*",)
    for name in items:
        try:
            check_collection_name(name)
        except InvalidInput as exc:
            raise InvalidInput(f"collections: {exc.message}") from exc
    return items


def check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    items = _items("groups", groups)
    for group in items:
        if not _GROUP.fullmatch(group):
            raise InvalidInput(
                f"groups: invalid group {group!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
    return items


def _items(field: str, values: Sequence[str]) -> tuple[str, ...]:
    """The values in order, without repeats; a bare string is refused (it would be read as
    one item per character)."""
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{field} must be a list of strings")
    if len(values) > MAX_SCOPE_ITEMS:
        raise InvalidInput(f"{field}: at most {MAX_SCOPE_ITEMS} entries")
    return tuple(dict.fromkeys(values))


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:
        raise InvalidInput("expires_at must carry a time zone (e.g. 2027-01-31T00:00:00Z)")
    if expires_at <= now:
        raise InvalidInput("expires_at must be in the future")
    return as_utc(expires_at)


def check_limit(field: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{field} must be a whole number of at least 1 (or unset: no limit)")
    return value

"""What a caller may read: which collections, and which documents inside them.

An `Access` travels with every read (search, answer, document list) down to the store, which
checks the collection before it queries and adds the document condition to the query itself
(`pipelines/stores/`): nothing is filtered out of results afterwards. The service derives it
from the request's API key (`app/principal.py`); the CLI, which holds the data dir itself,
reads with `FULL_ACCESS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pipelines.errors import Forbidden, InvalidInput

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
# The payload field holding a document's access list (its groups); absent or empty = public.
GROUPS_FIELD = "groups"
GROUP_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_GROUP = re.compile(GROUP_PATTERN)
GROUP_RULE = "a group is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def group_problem(name: object) -> str | None:
    """Why `name` is no group name (None: it is one)."""
    # fullmatch: `re.match` with `$` would let "hr\n" through
    if isinstance(name, str) and _GROUP.fullmatch(name):
        return None
    return f"invalid group {name!r}: {GROUP_RULE}"


def check_groups(names: Iterable[object]) -> tuple[str, ...]:
    """The groups sorted, without repeats (the form every chunk stores); InvalidInput naming
    the first bad one."""
    checked: set[str] = set()
    for name in names:
        problem = group_problem(name)
        if problem:
            raise InvalidInput(problem)
        checked.add(str(name))
    return tuple(sorted(checked))


def parse_groups(text: str) -> tuple[str, ...]:
    """Comma-separated groups (`hr, finance`; blank items ignored) as check_groups gives
    them: `rag ingest --groups`, an upload's `groups` form field, a corpus line's string."""
    return check_groups(part.strip() for part in text.split(",") if part.strip())


def role_at_least(role: Role, needed: Role) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Access:
    """`collections` None: every collection; `groups` None: every document (admin, or a
    server without keys), else public documents and those sharing one of these groups."""

    collections: frozenset[str] | None = None
    groups: frozenset[str] | None = None

    @classmethod
    def of(cls, collections: Iterable[str], groups: Iterable[str] | None) -> Access:
        names = frozenset(collections)
        return cls(
            collections=None if "*" in names else names,
            groups=None if groups is None else frozenset(groups),
        )

    def allows(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def check(self, collection: str) -> None:
        """Raises Forbidden (403) when the collection is not this caller's."""
        if not self.allows(collection):
            raise Forbidden(f"this API key may not use the collection '{collection}'")

    def visible(self, collections: Iterable[str]) -> list[str]:
        return [c for c in collections if self.allows(c)]


FULL_ACCESS = Access()

"""Two tenants for the isolation and auth-matrix tests: collections `alpha` and `beta` with
recognisable documents (each names its collection's codeword), and API keys of every kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from app.main import create_app
from app.services import Services, open_keys
from ingest.job import build_pipeline
from pipelines.core import Core
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client

# Every chunk of a collection says its codeword; finding one in the other tenant's answer,
# sources, prompt or listing is a leak.
CODEWORDS = {"alpha": "AZURE-17", "beta": "BRONZE-42"}
DOCS = {
    "alpha": {
        "espresso.md": "# Espresso\n\nThe alpha espresso guide: grind fine, 9 bar, 25 seconds. "
        "Alpha codeword AZURE-17.",
        "kettle.md": "# Kettle\n\nThe alpha kettle manual: descale monthly with citric acid. "
        "Alpha codeword AZURE-17.",
    },
    "beta": {
        "espresso.md": "# Espresso\n\nThe beta espresso notes: grind fine, 9 bar, 30 seconds. "
        "Beta codeword BRONZE-42.",
        "payroll.md": "# Payroll\n\nThe beta payroll runs on the 25th of each month. "
        "Beta codeword BRONZE-42.",
    },
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Tenants:
    client: httpx.AsyncClient
    services: Services
    generator: ScriptedGenerator
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str) -> dict[str, str]:
        return auth(self.tokens[who])


async def write_collection(core: Core, root: Path, collection: str) -> None:
    folder = root / collection
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS[collection].items():
        (folder / name).write_text(text)
    await build_pipeline(core).run([folder], collection)


@asynccontextmanager
async def tenants(core: Core, root: Path) -> AsyncIterator[Tenants]:
    """The app in-process over `alpha` and `beta`, with keys: `admin`, `alpha_read`,
    `alpha_write`, `beta_read`, `both_read`, `revoked`, `expired` (expired by the time this
    yields)."""
    for collection in DOCS:
        await write_collection(core, root, collection)
    async with AsyncExitStack() as stack:
        keys, quotas = await open_keys(core.settings, stack)
        generator = ScriptedGenerator()
        services = Services(core=core, keys=keys, quotas=quotas)
        services.set_generator(generator)
        made: dict[str, tuple[str, str]] = {}
        for who, role, collections in (
            ("admin", "admin", ["*"]),
            ("alpha_read", "read", ["alpha"]),
            ("alpha_write", "write", ["alpha"]),
            ("beta_read", "read", ["beta"]),
            ("both_read", "read", ["alpha", "beta"]),
            ("revoked", "write", ["alpha"]),
        ):
            record, token = keys.create(name=who, role=role, collections=collections)  # type: ignore[arg-type]
            made[who] = (record.id, token)
        keys.revoke(made["revoked"][0])
        expires = datetime.now(UTC) + timedelta(seconds=1)
        record, token = keys.create(
            name="expired", role="admin", collections=["*"], expires_at=expires
        )
        made["expired"] = (record.id, token)
        client = await stack.enter_async_context(
            in_process_client(create_app(core.settings, services=services))
        )
        # The key expires when the clock passes its time: wait for that, not a fixed delay.
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.01)
        assert datetime.now(UTC) > expires
        yield Tenants(
            client=client,
            services=services,
            generator=generator,
            tokens={who: token for who, (_, token) in made.items()},
            ids={who: key_id for who, (key_id, _) in made.items()},
        )

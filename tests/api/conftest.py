"""The real app in-process (ASGI transport + lifespan) over a real Edge store and model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.main import create_app
from app.services import Services
from pipelines.settings import Settings
from tests.support.servers import in_process_client


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(settings, services=services)) as c:
        yield c

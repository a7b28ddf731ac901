"""Start-up: the service warms its embedder and index before it serves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest

from app.services import Services, build_services
from pipelines.access import FULL_ACCESS
from pipelines.settings import Settings


async def test_the_service_runs_one_search_before_serving(
    settings: Settings, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    await services.store.close()  # build_services opens the same data dir itself
    caplog.set_level(logging.INFO, logger="app.services")
    async with AsyncExitStack() as stack:
        built = await build_services(settings, stack, start_generator=False)
        hits = await built.retrieval.search(
            "French press grind", "default", k=1, access=FULL_ACCESS
        )
    assert "warm-up search on 'default' in" in caplog.text
    assert hits


async def test_without_a_collection_the_warm_up_embeds_a_query_only(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    caplog.set_level(logging.INFO, logger="app.services")
    async with AsyncExitStack() as stack:
        await build_services(settings, stack, start_generator=False)
    assert "warm-up query embedding (no default collection yet) in" in caplog.text
    assert "failed" not in caplog.text

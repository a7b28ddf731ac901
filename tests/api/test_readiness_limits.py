"""/readyz tells an operator when the Redis shared by replicas for per-key limits is away
(each replica then counts alone), without taking the replica out of rotation."""

from __future__ import annotations

from app.main import create_app
from app.quotas import Quotas
from app.services import Services
from pipelines.settings import RedisSettings
from tests.support.redis_server import redis_server
from tests.support.servers import in_process_client
from tests.support.sockets import free_port


async def test_readiness_says_when_shared_limits_are_local(services: Services) -> None:
    with redis_server() as url:
        services.quotas = Quotas.from_settings(
            services.settings.model_copy(update={"redis": RedisSettings(url=url)})
        )
        async with in_process_client(create_app(services.settings, services=services)) as c:
            r = await c.get("/readyz")
            assert r.status_code == 200 and "limits" not in r.json()["details"]
    await services.quotas.close()
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    services.quotas = Quotas.from_settings(
        services.settings.model_copy(update={"redis": RedisSettings(url=dead)})
    )
    async with in_process_client(create_app(services.settings, services=services)) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["details"]["limits"] == "local (Redis unreachable)"
        assert r.json()["details"]["search"] == "ready"
    await services.quotas.close()

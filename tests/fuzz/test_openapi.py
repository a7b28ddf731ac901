"""Schema fuzzing: schemathesis against the real app served by uvicorn on loopback.

Every operation of `/openapi.json`, with examples generated from the schema (valid and
invalid: negative mode), must never answer 5xx, and every response must be one the schema
documents (status, content type, body). The app is the real one over the real store and
model with the sample documents; the generation routes answer through the scripted
Generator (the real vLLM tests live in tests/integration). Bounded: a fixed number of
examples per operation, derandomized, so a run costs the same every time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

pytestmark = pytest.mark.slow

# A bounded run in `make test`; RAG_FUZZ_EXAMPLES=500 for a long hunt by hand.
EXAMPLES_PER_OPERATION = int(os.environ.get("RAG_FUZZ_EXAMPLES", "25"))
# HTTP framing belongs to the HTTP server: uvicorn answers a malformed `transfer-encoding`
# with its own plain-text 400 before any application code runs. Generated cases keep their
# other headers (unknown ones included) but never these.
ADMIN_KEY = "fuzz-bootstrap-admin-key"
FRAMING_HEADERS = {"transfer-encoding", "content-length", "connection", "host", "expect", "te"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[ThreadedLiveServer]:
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("fuzz") / "data")  # type: ignore[call-arg]
    # Every case is sent with the bootstrap admin key, so the keys a case creates (POST
    # /v1/keys) do not turn the rest of the run into 401s.
    settings.server.api_key = SecretStr(ADMIN_KEY)
    server = ThreadedLiveServer(settings, embedder, ScriptedGenerator())
    server.start()
    yield server
    server.stop()


# The schema the server will serve (building the app runs no lifespan: nothing loads), so
# pytest can make one test per operation at collection time.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())  # type: ignore[call-arg]


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_or_off_schema(
    case: schemathesis.Case, fuzzed_server: ThreadedLiveServer
) -> None:
    headers = {
        k: v
        for k, v in (case.headers or {}).items()
        if k.lower() not in FRAMING_HEADERS and k.lower() != "authorization"
    }
    case.headers = {**headers, "Authorization": f"Bearer {ADMIN_KEY}"}
    case.call_and_validate(base_url=fuzzed_server.url, checks=CHECKS, timeout=60)

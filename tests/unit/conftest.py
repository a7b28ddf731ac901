"""tests/unit is pure and fast: no model, no engine. A unit test that asks for the embedding
model (or a fixture built on it) fails at once, pointing at tests/integration."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedder() -> None:
    pytest.fail("tests/unit loads no model: move a test that needs one to tests/integration")

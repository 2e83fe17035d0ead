"""The state tests run once per backend: each gets a fresh ``database``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deepaas.state import Database
from deepaas.state.sqlite import SQLiteDatabase

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Database]:
    opened = SQLiteDatabase(str(tmp_path / "state"))
    yield opened
    await opened.close()

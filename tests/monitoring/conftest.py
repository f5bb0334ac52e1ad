from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from config.asgi import application
from monitoring import api
from monitoring.events import ward_vitals


@pytest.fixture(autouse=True)
def _fresh_ingestion_state() -> Iterator[None]:
    api._limiter._buckets.clear()
    ward_vitals._pending.clear()  # pushes left by an earlier test's closed event loop
    ward_vitals._due.clear()
    ward_vitals._sent.clear()
    # These tests send the pending vitals themselves (flush); a ward's slot may come up a
    # moment after a post, and the live tick must not send before them.
    ward_vitals._interval = 3600.0
    yield
    ward_vitals._interval = None


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the real ASGI application (the path daphne serves)."""
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client

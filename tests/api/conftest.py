from __future__ import annotations

import pytest

from tests.api.hospital import Hospital, hospital_build


@pytest.fixture
def hospital() -> Hospital:
    return hospital_build()

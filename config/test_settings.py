"""Settings for the test suite: the real MariaDB and Redis, never SQLite or in-memory fakes.

Defaults point at the local servers; DATABASE_URL and REDIS_URL override them.
"""

from __future__ import annotations

import os

os.environ.setdefault("PORTAL_MODE", "test")
os.environ.setdefault("DATABASE_URL", "mysql://root@127.0.0.1:3306/portal")
# Database 9 keeps the suite apart from a developer's running portal (db 0): the suite
# flushes it between tests.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", "portal-test")
os.environ.setdefault("CACHE_KEY_PREFIX", "portal-test")

from config.settings import *  # noqa: E402, F403

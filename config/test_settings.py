"""Settings for the test suite: the real MariaDB and Redis, never SQLite or in-memory fakes.

Defaults point at the local servers; DATABASE_URL (Django tests in test_<name>) and
TEST_REDIS_URL override them.
"""

from __future__ import annotations

import os

os.environ.setdefault("PORTAL_MODE", "test")
os.environ.setdefault("DATABASE_URL", "mysql://root@127.0.0.1:3306/portal")
# The suite flushes its Redis database between tests, so it never takes REDIS_URL (a running
# portal's database) but TEST_REDIS_URL, by default database 9 of the local server.
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", "portal-test")
os.environ.setdefault("CACHE_KEY_PREFIX", "portal-test")

from config.settings import *  # noqa: F403
from config.settings import DATABASES, _database

# A second alias on the same server, so the replica router is exercised (tests switch it on
# with READ_REPLICA_ALIAS; the suite otherwise reads from default, inside its transactions).
if "replica" not in DATABASES:
    DATABASES["replica"] = _database(os.environ["DATABASE_URL"])
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
READ_REPLICA_ALIAS = None

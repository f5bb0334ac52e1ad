"""The dashboards' database threads: WebSocket logins, access checks, snapshots, audit rows and
acknowledgements run here, on long-lived connections, apart from the ingestion writers."""

from __future__ import annotations

from django.conf import settings

from config.dbthreads import DatabaseThreads

dashboard_db = DatabaseThreads(
    "dashboard-db", lambda: int(getattr(settings, "DASHBOARD_DB_THREADS", 4))
)

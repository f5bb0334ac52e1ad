"""Who is on the other end of a dashboard WebSocket: Channels' session authentication, with the
session and user lookup run on the dashboards' database threads (``portal.dbthreads``) instead
of Channels' one shared thread, where every connect queued behind every other's queries."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware, get_user
from channels.sessions import CookieMiddleware, SessionMiddleware

from portal.dbthreads import dashboard_db

# ``channels.auth.get_user`` is a ``database_sync_to_async`` wrapper; ``.func`` is the plain
# function behind it (session key, backend, user, session hash check).
_get_user = dashboard_db.run(get_user.func)


class DashboardAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await _get_user(scope)


def DashboardAuthMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(SessionMiddleware(DashboardAuthMiddleware(inner)))

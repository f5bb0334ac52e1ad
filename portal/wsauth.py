"""Who is on the other end of a dashboard WebSocket: Channels' session authentication, with the
session and user lookup run on the dashboards' database threads (``portal.dbthreads``) instead
of Channels' one shared thread, where every connect queued behind every other's queries, and
without Channels' wrapper around the socket's ``send``."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware, get_user
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware

from portal.dbthreads import dashboard_db

# ``channels.auth.get_user`` is a ``database_sync_to_async`` wrapper; ``.func`` is the plain
# function behind it (session key, backend, user, session hash check).
_get_user = dashboard_db.run(get_user.func)


class DashboardAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await _get_user(scope)


class DashboardSessionMiddleware(SessionMiddleware):
    """Channels' ``SessionMiddleware`` for WebSockets, minus its wrapper around ``send``.

    The wrapper saves a modified session and sets its cookie on ``http.response.start`` only
    (``InstanceSessionWrapper.save_message_types``), which a WebSocket never sends, so for a
    socket it only passes each message on; yet it read the session's ``modified`` and
    ``is_empty()`` through a lazy proxy for every ward frame to every dashboard, about a tenth
    of the dashboards' daphne's time in a reconnect storm (py-spy, bench fanout). The session
    is resolved exactly as Channels resolves it."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await super().__call__(scope, receive, send)
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def DashboardAuthMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(DashboardSessionMiddleware(DashboardAuthMiddleware(inner)))

"""Closing dashboards whose session ended or whose clinician lost the ward, at once.

The consumer also re-checks every 30 s (portal.consumers.RECHECK_SECONDS); these signals make
the common cases immediate: logging out, a ward access revoked, an account deactivated.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from monitoring.events import user_message_send_sync
from patients.models import WardAccess


@receiver(user_logged_out, dispatch_uid="portal.close_dashboards_on_logout")
def close_dashboards_on_logout(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    user_message_send_sync(user.pk, {"type": "session.ended", "session_key": session_key})


@receiver(post_delete, sender=WardAccess, dispatch_uid="portal.close_dashboards_on_revocation")
def close_dashboards_on_revocation(sender: Any, instance: WardAccess, **kwargs: Any) -> None:
    user_id, ward_code = instance.user_id, instance.ward.code
    transaction.on_commit(
        lambda: user_message_send_sync(user_id, {"type": "access.changed", "ward": ward_code})
    )


@receiver(
    post_save,
    sender=settings.AUTH_USER_MODEL,
    dispatch_uid="portal.close_dashboards_on_deactivation",
)
def close_dashboards_on_deactivation(sender: Any, instance: Any, **kwargs: Any) -> None:
    """An inactive account's dashboards re-check their access (``"ward": None``: every ward),
    which reads the account's flags from the database and closes them."""
    if instance.is_active:
        return
    user_id = instance.pk
    transaction.on_commit(
        lambda: user_message_send_sync(user_id, {"type": "access.changed", "ward": None})
    )

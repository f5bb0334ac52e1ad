"""Who may call the records API, and how they are audited and throttled.

- Browsers: Django's session (SessionAuthentication, CSRF enforced).
- Integrations: ``Authorization: Token <token>`` (``ApiToken``: scoped, revocable, hashed).
- Devices: their credential is for ingestion only and is refused here (it is not a Token).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from patients.models import ApiToken
from patients.selectors import ALL_WARDS_PERMISSION

TOKEN_PREFIX = "api_"  # noqa: S105 - a recognisable prefix, not a secret


def api_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@transaction.atomic
def api_token_issue(*, user: Any, name: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """Create a token for ``user`` limited to ``scopes``; return it and the plain token, which
    is never stored and cannot be shown again."""
    unknown = set(scopes) - set(ApiToken.Scope.values)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {ApiToken.Scope.values}")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        scopes=sorted(set(scopes)),
        digest=api_token_digest(plain),
        hint=plain[: len(TOKEN_PREFIX) + 4],
    )
    return token, plain


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme != self.keyword:
            return None
        token = (
            ApiToken.objects.select_related("user")
            .filter(digest=api_token_digest(given.strip()), revoked_at__isnull=True)
            .first()
        )
        now = timezone.now()
        if token is None or (token.expires_at is not None and token.expires_at <= now):
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked API token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is deactivated.")
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def request_token(request: Request) -> ApiToken | None:
    return request.auth if isinstance(request.auth, ApiToken) else None


class TokenScopes(permissions.BasePermission):
    """A token may read with "read", act on alerts with "acknowledge", change with "write".

    Views declare ``required_scope`` for unsafe methods (default "write"); sessions are not
    limited by scopes, only by the user's own permissions.
    """

    message = "This API token's scopes do not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request_token(request)
        if token is None:
            return True
        if request.method in permissions.SAFE_METHODS:
            return ApiToken.Scope.READ in token.scopes
        return getattr(view, "required_scope", ApiToken.Scope.WRITE) in token.scopes


class IsAdministrator(permissions.BasePermission):
    """Administrators: superusers or holders of patients.view_all_wards."""

    message = "Administrators only."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.has_perm(".".join(ALL_WARDS_PERMISSION))
        )


class ReadForAllWriteForAdministrators(IsAdministrator):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return bool(request.user and request.user.is_authenticated)
        return super().has_permission(request, view)


class PerCredentialThrottle(throttling.SimpleRateThrottle):
    """Throttles each API token on its own, and each user's sessions together."""

    scope = "credential"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        token = request_token(request)
        if token is not None:
            ident = f"token-{token.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"anon-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

"""The caller of the RPC being served: the interceptor authenticates it (through
``service.auth.Authenticator``) and binds it to the call's task here."""

from __future__ import annotations

import contextvars

from badge_service.domain.auth import Principal
from badge_service.domain.errors import Unauthenticated

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served (set by the interceptor before the servicer runs)."""
    try:
        return _current.get()
    except LookupError:  # pragma: no cover - only if a method skipped the interceptor
        raise Unauthenticated("no caller", reason="MISSING_CREDENTIALS") from None


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    """Binds the caller for the current call's task."""
    return _current.set(principal)

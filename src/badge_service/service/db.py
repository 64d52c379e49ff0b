"""The unit of work the use cases open (``store.db.Database``), named here so that a transport
builds its servicers with it without importing the store."""

from __future__ import annotations

from badge_service.store.db import Database

__all__ = ["Database"]

"""The use cases: one module per resource, each public function one transaction script that
takes domain values, opens the unit of work (``store.db.Database``), calls the store and the
domain rules, and returns domain values or raises domain errors. Transports (``rpc``, later
``http``) decode, call one use case, and encode; they never reach the store themselves."""

from badge_service.store.db import Database

__all__ = ["Database"]

"""Database errors become domain errors here, the one place (as advanced-alchemy's
``wrap_sqlalchemy_exception`` does): the unit of work (``Database`` in store/db.py) passes
every failure of a transaction through :func:`translate` before its caller sees it.

- A store fault (store/faults.py: the database unavailable, a transaction that lost a
  conflict) becomes StoreUnavailable or TransactionAborted, raised from the driver's error.
- A constraint violation a caller can cause becomes the domain error that
  ``models.VIOLATIONS`` names for the constraint, built from the failed statement's
  parameters. The constraint is found by its name: PostgreSQL reports it; SQLite reports a
  UNIQUE violation by its columns (looked up in the models) and a FOREIGN KEY violation by
  nothing at all, so there the statement's table decides (the one foreign key of the table,
  or referring to it for a DELETE, that the table translates).
- Anything else (a domain error raised by the work itself, a bug, a violation the table does
  not name) passes through as it is.

Store functions therefore catch a database error only to act on it inside the transaction (try
another claim code or slug in a savepoint) or to say more than the statement knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import ForeignKeyConstraint, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from badge_service.domain.errors import DomainError
from badge_service.store.faults import classify
from badge_service.store.models import VIOLATIONS, metadata

# The attribute of a failed statement's StatementError holding its parameters by name (one
# set; SQLAlchemy's own ``params`` are the driver's, positional).
_PARAMS = "badge_service_params"
_CHAIN_LIMIT = 6
_DML = re.compile(
    r'\s*(?:(INSERT)(?:\s+OR\s+\w+)?\s+INTO|(UPDATE)|(DELETE)\s+FROM)\s+"?(\w+)"?', re.IGNORECASE
)
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)")

Rule = Callable[[Mapping[str, Any]], DomainError]


def translate(exc: Exception) -> Exception:
    """The error a caller of the unit of work gets for ``exc``: a domain error raised from it
    when ``exc`` is a store fault or a constraint violation the table names, else ``exc``."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, IntegrityError):
        error = _violation(exc)
        return exc if error is None else _raised_from(error, exc)
    fault = classify(exc)
    if fault is None:
        return exc
    return _raised_from(fault.error(), exc)


def _raised_from(error: DomainError, exc: Exception) -> DomainError:
    error.__cause__ = exc
    error.__suppress_context__ = True
    return error


def listen(engine: Engine) -> None:
    """Keeps, on each failed statement's error, its parameters by name (what a VIOLATIONS
    rule reads). Runs on failures only."""

    def remember(ctx: ExceptionContext) -> None:
        error, context = ctx.sqlalchemy_exception, ctx.execution_context
        compiled = getattr(context, "compiled_parameters", None)
        if error is not None and compiled is not None and len(compiled) == 1:
            setattr(error, _PARAMS, compiled[0])

    event.listen(engine, "handle_error", remember)


def raw_error(
    exc: Exception, sql: str, params: Any, dbapi_error: type[Exception] | None = None
) -> StatementError:
    """A driver error of a statement run straight on the driver (sqlite3's, or asyncpg's as
    SQLAlchemy's adapter translates it, with the adapter's base ``dbapi_error``), as
    SQLAlchemy would have raised it (IntegrityError, OperationalError, ...), with what
    translate reads."""
    if dbapi_error is None:
        import sqlite3

        dbapi_error = sqlite3.Error
    error = DBAPIError.instance(sql, None, exc, dbapi_error)
    error.__cause__, error.__suppress_context__ = exc, True  # raise ... from exc
    if isinstance(params, Mapping):
        setattr(error, _PARAMS, params)
    return error


def _violation(exc: IntegrityError) -> DomainError | None:
    rule = _rule(exc)
    if rule is None:
        return None
    # Many rows at once: which one failed is unknown, so only a rule that needs no value of
    # the statement can say what it was.
    params = getattr(exc, _PARAMS, None) or {}
    try:
        return rule(params)
    except KeyError:
        return None


def _rule(exc: IntegrityError) -> Rule | None:
    found = _DML.match(exc.statement or "")
    table = found.group(4).lower() if found else None
    deleting = bool(found and found.group(3))
    name = _constraint_name(exc)
    if name is not None:
        return VIOLATIONS.get((name, deleting))
    text = str(exc.orig)
    unique = _SQLITE_UNIQUE.match(text)
    if unique is not None:
        name = _unique_by_columns().get(unique.group(1).strip())
        return None if name is None else VIOLATIONS.get((name, False))
    if text.startswith("FOREIGN KEY constraint failed") and table is not None:
        rules = set(_foreign_keys(table, deleting))
        return rules.pop() if len(rules) == 1 else None
    return None


def _constraint_name(exc: IntegrityError) -> str | None:
    """The violated constraint's name as the driver reports it (asyncpg does; sqlite3 not)."""
    link: BaseException | None = exc.orig
    for _ in range(_CHAIN_LIMIT):
        if link is None:
            return None
        name = getattr(link, "constraint_name", None)
        if isinstance(name, str):
            return name
        link = link.__cause__
    return None


_UNIQUE: dict[str, str] = {}


def _unique_by_columns() -> dict[str, str]:
    """Unique constraints by SQLite's way of naming them (``table.a, table.b``)."""
    if not _UNIQUE:
        for table in metadata.tables.values():
            for constraint in table.constraints:
                if isinstance(constraint, UniqueConstraint) and isinstance(constraint.name, str):
                    columns = ", ".join(f"{table.name}.{c.name}" for c in constraint.columns)
                    _UNIQUE[columns] = constraint.name
    return _UNIQUE


def _foreign_keys(table: str, deleting: bool) -> list[Rule]:
    """The rules of the foreign keys a statement on ``table`` can violate: those of the table
    (an INSERT or UPDATE naming a row that is not there), or those referring to it (a DELETE
    of a row still referred to)."""
    found: list[Rule] = []
    for other in metadata.tables.values():
        for fk in other.constraints:
            if not isinstance(fk, ForeignKeyConstraint):
                continue
            on_table = fk.referred_table.name if deleting else other.name
            rule = VIOLATIONS.get((str(fk.name), deleting))
            if on_table == table and rule is not None:
                found.append(rule)
    return found

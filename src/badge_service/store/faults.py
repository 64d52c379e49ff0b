"""Which failures of the database are the store's, not ours: the one place that decides.

``classify(exc)`` maps an exception to a :class:`Fault`, or None when it is not a store fault
(then it is a bug of ours: INTERNAL). It goes by what the driver reports, never by the
exception's class name, since SQLAlchemy wraps the same driver error in different classes
(asyncpg's "the database system is shutting down" is a plain DBAPIError, not an
OperationalError):

- PostgreSQL, by SQLSTATE: class 08 (connection exception), 57P (operator intervention:
  shutting down, starting up, terminated), 57014 (statement timeout), 53 (insufficient
  resources: disk full, out of memory, too many connections), 58 (system or I/O error),
  25006 (read-only transaction: a standby), 28 and 3D000 (refused at connect) are
  UNAVAILABLE; so are 26000 and 42P05 (a prepared statement missing, or its name taken: what
  a pooler in transaction mode does to named statements, with a hint in the log to turn the
  statement cache off; the statement did not run, so a retry is safe); 40001 (serialization
  failure) and 40P01 (deadlock) are ABORTED: the transaction was rolled back whole and may
  simply be retried.
- SQLite, by result code: BUSY ("database is locked"), READONLY, IOERR, FULL, CANTOPEN, NOMEM
  and PROTOCOL are UNAVAILABLE.
- No SQLSTATE: a connection SQLAlchemy invalidated (lost mid-call), asyncpg's own interface
  errors (a connection closed under a call), the pool's timeout, a timeout around database
  work, and any OSError (refused, reset, unreachable) are UNAVAILABLE.

The unit of work raises a fault as a domain error (StoreUnavailable, TransactionAborted:
store/errors.py translates), which a transport answers with like any other and asks to
``report()`` itself, and the store's health (``StoreFaults``) hears of every UNAVAILABLE fault
a database call meets, so that the health service need not wait for its next probe. Log lines
about faults are rate-limited here (``log_fault``): one line per kind of fault per interval,
without a traceback, since an outage fails every call.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from badge_service.domain.errors import Aborted, DomainError, Unavailable

log = logging.getLogger("badge_service.store")

UNAVAILABLE = "UNAVAILABLE"
ABORTED = "ABORTED"

# SQLSTATE classes (first two characters) and codes, per PostgreSQL's Appendix A.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "58", "28"})
_UNAVAILABLE_STATES = frozenset({"57014", "25006", "3D000"})
_ABORTED_STATES = frozenset({"40001", "40P01"})
# invalid_sql_statement_name ("prepared statement ... does not exist") and
# duplicate_prepared_statement ("... already exists"): never raised by statements of ours on a
# connection that keeps its session, only when a pooler in transaction mode gave the session's
# named statements to other server connections.
_PREPARED_STATES = frozenset({"26000", "42P05"})
PREPARED_HINT = (
    "a prepared statement was lost or its name clashed between server connections: the "
    "database URL goes through a pooler in transaction mode (PgBouncer?); set "
    "BADGE_SERVICE_DB_STATEMENT_CACHE=0 (serve --db-statement-cache 0), see docs/deploy.md"
)
# SQLite primary result codes (the low byte of an extended code).
_SQLITE_UNAVAILABLE = {
    5: "SQLITE_BUSY",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
}
_CHAIN_LIMIT = 6


class StoreUnavailable(Unavailable):
    """The database cannot serve the call now; retrying later may succeed (UNAVAILABLE).

    Raised by the unit of work (store/errors.py) from the driver's error, its ``__cause__``;
    ``fault`` is what classify found."""

    def __init__(self, fault: Fault | None = None) -> None:
        super().__init__("the store is unavailable; retry later", reason="STORE_UNAVAILABLE")
        self.fault = fault or Fault(UNAVAILABLE, "unavailable")

    def report(self) -> None:
        """Logs the fault, rate-limited (log_fault): an outage fails every call."""
        log_fault(self.fault, self.__cause__ or self)

    def __str__(self) -> str:
        # For log lines that print the error: the driver's words, not only the client's.
        return _with_cause(self)


class TransactionAborted(Aborted):
    """The call's transaction lost a conflict with another and was rolled back whole; it may
    be retried at once (ABORTED, AIP-194). Raised as StoreUnavailable is."""

    def __init__(self, fault: Fault | None = None) -> None:
        super().__init__(
            "the transaction conflicted with another and was rolled back; retry",
            reason="TRANSACTION_ABORTED",
        )
        self.fault = fault or Fault(ABORTED, "aborted")

    def report(self) -> None:
        """Logs the fault, rate-limited (log_fault)."""
        log_fault(self.fault, self.__cause__ or self)

    def __str__(self) -> str:
        return _with_cause(self)


# The domain errors a store fault becomes: each carries its Fault and the driver's error.
STORE_FAULTS = (StoreUnavailable, TransactionAborted)


def _with_cause(error: StoreUnavailable | TransactionAborted) -> str:
    cause = error.__cause__
    return error.message if cause is None else f"{error.message} ({describe(cause)})"


@dataclass(frozen=True, slots=True)
class Fault:
    """A classified store failure: its canonical status code name and a short, stable label
    of its kind (``SQLSTATE 57P03``, ``SQLITE_FULL``, ``pool timeout``), for logs."""

    code: str
    label: str
    # What an operator can do about it, for the log line; "" when nothing specific.
    hint: str = ""

    def error(self) -> StoreUnavailable | TransactionAborted:
        """The domain error a client is answered with."""
        return StoreUnavailable(self) if self.code == UNAVAILABLE else TransactionAborted(self)


def _sqlstate_fault(state: str) -> Fault | None:
    if state in _PREPARED_STATES:
        return Fault(UNAVAILABLE, f"SQLSTATE {state}", PREPARED_HINT)
    if state in _ABORTED_STATES:
        return Fault(ABORTED, f"SQLSTATE {state}")
    if state[:2] in _UNAVAILABLE_CLASSES or state[:3] == "57P" or state in _UNAVAILABLE_STATES:
        return Fault(UNAVAILABLE, f"SQLSTATE {state}")
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the driver error SQLAlchemy wrapped (``.orig``) and their causes."""
    out: list[BaseException] = []
    # A store fault already translated stands for the driver's error it was raised from.
    current: BaseException | None = exc.__cause__ if isinstance(exc, STORE_FAULTS) else exc
    while current is not None and len(out) < _CHAIN_LIMIT and current not in out:
        out.append(current)
        orig = current.orig if isinstance(current, DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return out


def classify(exc: BaseException) -> Fault | None:
    """The store fault ``exc`` is (or, translated already, stands for), or None when it is
    none (a bug: INTERNAL)."""
    if isinstance(exc, STORE_FAULTS):
        return exc.fault
    if isinstance(exc, DomainError | asyncio.CancelledError):
        return None
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, DBAPIError) and link.connection_invalidated:
            return Fault(UNAVAILABLE, "connection lost")
    for link in chain:
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str) and len(state) == 5:
            return _sqlstate_fault(state)
        if isinstance(link, sqlite3.Error):
            code = getattr(link, "sqlite_errorcode", None)
            if isinstance(code, int):
                name = _SQLITE_UNAVAILABLE.get(code & 0xFF)
                return Fault(UNAVAILABLE, name) if name is not None else None
    for link in chain:
        if isinstance(link, PoolTimeout):
            return Fault(UNAVAILABLE, "pool timeout")
        if isinstance(link, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
            # Raised by asyncpg itself, not the server, on fetch's own pool (store/db.py): a
            # connection closed under the call, the pool closing, or a connection the server
            # ended while idle in the pool, found in a state asyncpg cannot run a query in
            # ("cannot switch to state 12": seen when PostgreSQL shuts down). fetch drops the
            # connection after any failure, so a retry gets a new one.
            return Fault(UNAVAILABLE, "connection lost")
        if isinstance(link, TimeoutError):  # asyncio's and asyncpg's timeouts (an OSError)
            return Fault(UNAVAILABLE, "timeout")
        if isinstance(link, OSError):
            return Fault(UNAVAILABLE, type(link).__name__)
    return None


def describe(exc: BaseException) -> str:
    """One line about a failure, for a log field or an error message: the driver's message,
    without SQLAlchemy's statement and parameters."""
    for link in _chain(exc):
        if not isinstance(link, DBAPIError):
            text = str(link).strip() or type(link).__name__
            return text.splitlines()[0][:300]
    return type(exc).__name__


class _FaultLog:
    """Writes at most one WARNING per kind of fault per interval, counting the rest."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def write(self, fault: Fault, exc: BaseException) -> None:
        now = time.monotonic()
        last = self._last.get(fault.label)
        if last is not None and now - last[0] < self.interval:
            self._last[fault.label] = (last[0], last[1] + 1)
            return
        self._last[fault.label] = (now, 0)
        extra: dict[str, object] = {
            "fault": fault.label,
            "error": describe(exc),
            # Failures of this kind not logged since the last line of it.
            "suppressed": last[1] if last is not None else 0,
        }
        if fault.hint:
            extra["hint"] = fault.hint
        log.warning(
            "store unavailable" if fault.code == UNAVAILABLE else "transaction aborted",
            extra=extra,
        )


LOG_INTERVAL = 10.0
_log = _FaultLog(LOG_INTERVAL)


def log_fault(fault: Fault, exc: BaseException) -> None:
    """Logs a call's store fault: one WARNING line per kind of fault per LOG_INTERVAL seconds
    (with how many were left out), never a traceback."""
    _log.write(fault, exc)


class StoreFaults:
    """What a Database's callers met: wakes the health monitor when a call fails with an
    UNAVAILABLE fault, so that it probes the store at once instead of at its next interval.

    Used on the event loop's thread only.
    """

    def __init__(self) -> None:
        self._wake: asyncio.Event | None = None
        self.suspect = False  # a call failed as unavailable since the last probe
        self.serving = True  # what the monitor last found; no wake-ups needed while False

    def note(self, exc: BaseException) -> None:
        """Records a failed database call (any exception; only store faults count)."""
        if not self.serving or self.suspect:
            return
        fault = classify(exc)
        if fault is not None and fault.code == UNAVAILABLE:
            self.suspect = True
            if self._wake is not None:
                self._wake.set()

    async def wait(self, seconds: float) -> None:
        """Sleeps ``seconds``, or less if a call fails as unavailable meanwhile."""
        if self._wake is None:
            self._wake = asyncio.Event()
        if self.suspect:
            return
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass


def unusable(url: str, exc: BaseException) -> str | None:
    """The one line to exit with when a store fault (not a bug) stops the service or a
    command at start: the database, without its password, and what went wrong."""
    fault = classify(exc)
    if fault is None:
        return None
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    hint = f"; {fault.hint}" if fault.hint else ""
    return f"error: cannot use the database {shown}: {describe(exc)} ({fault.label}){hint}"

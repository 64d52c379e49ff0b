"""Structured logging on stderr: one JSON object per line, or one readable text line on a
terminal (``--log-format``). Lines written while a call is served carry its request id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _Seconds:
    """The text of the current second, formatted once per second rather than per line."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def stamp(self, created: float) -> str:
        """``created`` as ISO 8601 UTC with milliseconds, as every log line writes it."""
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._text}.{int((created - second) * 1000):03d}Z"


# The request id of the call being served (set by the interceptor), for every line it logs.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class _RequestIdFilter(logging.Filter):
    """Adds the current call's request id to a record logged while the call is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        if "request_id" not in record.__dict__:
            rid = request_id.get()
            if rid is not None:
                record.request_id = rid
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """Formats a record as one readable line: time, level, logger, message, then key=value."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds()

    def format(self, record: logging.LogRecord) -> str:
        """The record as text."""
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in _extras(record).items())
        line = (
            f"{self._seconds.stamp(record.created)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}{' ' + fields if fields else ''}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if text and " " not in text and '"' not in text else json.dumps(text)


class JsonFormatter(logging.Formatter):
    """Formats a record and its ``extra`` fields as one JSON line."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds()

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        out: dict[str, Any] = {
            "ts": self._seconds.stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes INFO and DEBUG lines in batches: at most ``interval``
    seconds late, or at once when a WARNING or worse arrives (which writes everything before
    it too), and on shutdown (logging.shutdown flushes every handler).

    The access log writes a line per call; a write(2) per line was the largest part of the
    log's cost under load.
    """

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._interval = interval
        self._flusher: threading.Thread | None = None
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Queues the formatted line; writes the queue at once for warnings and errors."""
        try:
            self._pending.append(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self._write_pending()
            else:
                self._start_timer()
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Queues an INFO line formatted elsewhere (AccessLog), in order with the records."""
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line + self.terminator)
            self._start_timer()

    def _start_timer(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_every, name="log-flush", daemon=True
            )
            self._flusher.start()

    def flush(self) -> None:
        """Writes every queued line."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self.stream.write("".join(lines))
        self.stream.flush()

    def close(self) -> None:
        """Writes what is queued and lets the timer thread end."""
        self._closed = True
        self.flush()
        super().close()

    def _flush_every(self) -> None:
        while not self._closed:
            time.sleep(self._interval)
            if self._pending:
                self.flush()


_direct: BatchingStreamHandler | None = None  # the handler configure() installed
_text = False  # whether configure() chose the text format


class AccessLog:
    """The access log: one JSON line per call on the ``badge_service.access`` logger, with the
    fields JsonFormatter would write for ``logger.info("rpc", extra=...)``.

    When logging is as configure() set it up (the root's one batching handler, nothing on the
    access logger itself), the line is formatted here and queued on that handler directly:
    a LogRecord's way through the logging machinery cost about 10 us a call, a large part of a
    GetBadge. Any other set-up (extra handlers, filters) gets the ordinary record.
    """

    def __init__(self, summary_window: float = 10.0) -> None:
        self._logger = logging.getLogger("badge_service.access")
        self._seconds = _Seconds()
        # UNAUTHENTICATED calls: the first of a window is written in full, the rest counted
        # and written as one summary when the window ends (a flood of bad keys would
        # otherwise write a line per call).
        self._window = summary_window
        self._unauth_until = 0.0
        self._unauth_count = 0
        self._unauth_peers: dict[str, int] = {}

    def summarise(self, now: float | None = None) -> None:
        """Writes the summary of UNAUTHENTICATED calls left out of the log, once their window
        is over (or at once when ``now`` is None: on shutdown)."""
        if not self._unauth_count:
            return
        if now is not None and now < self._unauth_until:
            return
        peers = sorted(self._unauth_peers.items(), key=lambda kv: -kv[1])[:5]
        self._logger.warning(
            "unauthenticated calls not logged one by one",
            extra={
                "status": "UNAUTHENTICATED",
                "count": self._unauth_count,
                "window_seconds": self._window,
                "top_peers": dict(peers),
            },
        )
        self._unauth_count = 0
        self._unauth_peers = {}

    def write(
        self,
        method: str,
        org: int | None,
        key: int | None,
        status: str,
        duration_ms: float,
        peer: str,
        rid: str | None = None,
    ) -> None:
        """Logs one call at INFO (nothing when the access logger is above INFO)."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if status == "UNAUTHENTICATED":
            now = time.monotonic()
            if now < self._unauth_until:
                self._unauth_count += 1
                host = peer.rpartition(":")[0] or peer
                if host in self._unauth_peers or len(self._unauth_peers) < 1000:
                    self._unauth_peers[host] = self._unauth_peers.get(host, 0) + 1
                return
            self.summarise()
            self._unauth_until = now + self._window
        direct = self._direct()
        if direct is None:
            fields: dict[str, Any] = {"method": method, "org": org, "key": key}
            fields |= {"status": status, "duration_ms": duration_ms, "peer": peer}
            fields["request_id"] = rid
            logger.info("rpc", extra=fields)
            return
        stamp = self._seconds.stamp(time.time())
        if _text:
            direct.write_line(
                f"{stamp} INFO    badge_service.access: rpc {method} {status} "
                f"{duration_ms}ms org={_number(org)} key={_number(key)} peer={peer} "
                f"request_id={rid}"
            )
            return
        direct.write_line(
            f'{{"ts": "{stamp}", "level": "info", '
            f'"logger": "badge_service.access", "msg": "rpc", "method": {_dumps(method)}, '
            f'"org": {_number(org)}, "key": {_number(key)}, "status": "{status}", '
            f'"duration_ms": {duration_ms!r}, "peer": {_dumps(peer)}, '
            f'"request_id": {"null" if rid is None else _dumps(rid)}}}'
        )

    def _direct(self) -> BatchingStreamHandler | None:
        """configure()'s handler when the access logger's lines may go to it directly (logging
        is as configure() set it up), else None (then log an ordinary record)."""
        logger = self._logger
        direct = _direct
        root_handlers = logging.root.handlers
        if (
            direct is None
            or logger.handlers
            or logger.filters
            or not logger.propagate
            or len(root_handlers) != 1
            or root_handlers[0] is not direct
        ):
            return None
        return direct

    def write_http(
        self, method: str, path: str, status: int, duration_ms: float, peer: str, rid: str
    ) -> None:
        """Logs one HTTP request at INFO (msg "http"; nothing when the access logger is above
        INFO), directly to configure()'s handler as ``write`` does."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        direct = self._direct()
        if direct is None:
            fields = {"method": method, "path": path, "status": status}
            fields |= {"duration_ms": duration_ms, "peer": peer, "request_id": rid}
            logger.info("http", extra=fields)
            return
        stamp = self._seconds.stamp(time.time())
        if _text:
            direct.write_line(
                f"{stamp} INFO    badge_service.access: http {method} {path} {status} "
                f"{duration_ms}ms peer={peer} request_id={rid}"
            )
            return
        direct.write_line(
            f'{{"ts": "{stamp}", "level": "info", '
            f'"logger": "badge_service.access", "msg": "http", "method": {_dumps(method)}, '
            f'"path": {_dumps(path)}, "status": {int(status)}, '
            f'"duration_ms": {duration_ms!r}, "peer": {_dumps(peer)}, '
            f'"request_id": {_dumps(rid)}}}'
        )


# json's own C string encoder (what json.dumps uses for a str), without dumps' set-up per call.
_dumps = json.encoder.encode_basestring_ascii


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Sends every log line to stderr: as JSON, as text, or ("auto") as text on a terminal
    and JSON otherwise."""
    # JsonFormatter writes none of the caller's file and line, thread or process, so the
    # records need not collect them: walking the stack for the caller is most of the cost of
    # the access log line written per call (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _direct, _text
    if fmt not in ("auto", "json", "text"):
        raise ValueError(f"log format {fmt!r} is not auto, json or text")
    _text = fmt == "text" or (fmt == "auto" and sys.stderr.isatty())
    handler = _direct = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if _text else JsonFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

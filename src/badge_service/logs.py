"""Structured logging: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record and its ``extra`` fields as one JSON line."""

    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        # An access log line per call: format each second's text once, not per record.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out: dict[str, Any] = {
            "ts": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
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

    def emit(self, record: logging.LogRecord) -> None:
        """Queues the formatted line; writes the queue at once for warnings and errors."""
        try:
            self._pending.append(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self._write_pending()
            elif self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_every, name="log-flush", daemon=True
                )
                self._flusher.start()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Writes every queued line."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            self.stream.write("".join(lines))
        self.stream.flush()

    def _flush_every(self) -> None:
        while True:
            time.sleep(self._interval)
            if self._pending:
                self.flush()


def configure(level: str = "INFO") -> None:
    """Sends every log line to stderr as JSON."""
    # JsonFormatter writes none of the caller's file and line, thread or process, so the
    # records need not collect them: walking the stack for the caller is most of the cost of
    # the access log line written per call (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

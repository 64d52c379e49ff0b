"""logs.BatchingStreamHandler: INFO lines wait in a queue until its timer thread writes them
(no test times the interval: a loaded machine delays any thread); a WARNING writes itself and
everything queued before it, in order, at once; flush() and the flush-then-close
logging.shutdown does leave nothing queued."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator

import pytest

from badge_service import logs
from badge_service.logs import BatchingStreamHandler, JsonFormatter


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def make_logger(handler: logging.Handler) -> logging.Logger:
    """A logger of its own (not the root's, not propagating) writing only to ``handler``."""
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


@pytest.fixture
def slow(stream: io.StringIO) -> Iterator[tuple[BatchingStreamHandler, logging.Logger]]:
    """A handler whose timer never fires during a test, so only WARNING and flush() write."""
    handler = BatchingStreamHandler(stream, interval=60)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = make_logger(handler)
    yield handler, logger
    logger.removeHandler(handler)
    handler.close()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


class WatchedStream(io.StringIO):
    """A StringIO whose writes (from the handler's timer thread too) can be waited for."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Condition()

    def write(self, s: str) -> int:
        with self.written:
            n = super().write(s)
            self.written.notify_all()
            return n

    def wait_for_lines(self, expected: list[str]) -> list[str]:
        """The stream's lines once they are ``expected`` (or whatever they are after a wait
        far longer than any timer interval here, so a timer that never fires fails)."""
        with self.written:
            self.written.wait_for(lambda: lines(self) == expected, timeout=WRITE_TIMEOUT)
            return lines(self)


# How long a test waits for the timer thread to write; generous, for a loaded machine.
WRITE_TIMEOUT = 30.0


def test_info_is_queued_then_written_by_the_timer() -> None:
    stream = WatchedStream()
    handler = BatchingStreamHandler(stream, interval=0.05)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = make_logger(handler)
    try:
        # Holding the handler's lock keeps the timer from writing (it takes the lock to flush),
        # so "queued, not written" holds however slowly this thread runs.
        with handler.lock:  # type: ignore[union-attr]
            logger.info("first")
            logger.debug("second")
            assert stream.getvalue() == ""  # queued, not written
        # Written by the timer thread, without a flush, a WARNING or a close.
        assert stream.wait_for_lines(["INFO first", "DEBUG second"]) == [
            "INFO first",
            "DEBUG second",
        ]
        # The timer keeps running: a later line is written too.
        logger.info("third")
        assert stream.wait_for_lines(["INFO first", "DEBUG second", "INFO third"]) == [
            "INFO first",
            "DEBUG second",
            "INFO third",
        ]
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_warning_writes_itself_and_the_queue_in_order_at_once(
    stream: io.StringIO, slow: tuple[BatchingStreamHandler, logging.Logger]
) -> None:
    _, logger = slow
    logger.info("a")
    logger.debug("b")
    logger.info("c")
    assert stream.getvalue() == ""
    logger.warning("w")
    assert lines(stream) == ["INFO a", "DEBUG b", "INFO c", "WARNING w"]
    logger.info("d")
    assert lines(stream) == ["INFO a", "DEBUG b", "INFO c", "WARNING w"]
    logger.error("e")
    logger.critical("f")
    assert lines(stream) == [
        "INFO a",
        "DEBUG b",
        "INFO c",
        "WARNING w",
        "INFO d",
        "ERROR e",
        "CRITICAL f",
    ]


def test_exception_lines_are_written_at_once(
    stream: io.StringIO, slow: tuple[BatchingStreamHandler, logging.Logger]
) -> None:
    handler, logger = slow
    handler.setFormatter(JsonFormatter())
    logger.info("before", extra={"method": "/x.Y/Z"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    got = [json.loads(line) for line in lines(stream)]
    assert [(g["level"], g["msg"]) for g in got] == [("info", "before"), ("error", "failed")]
    assert got[0]["method"] == "/x.Y/Z"
    assert "RuntimeError: boom" in got[1]["exc"]


def test_flush_writes_everything(
    stream: io.StringIO, slow: tuple[BatchingStreamHandler, logging.Logger]
) -> None:
    handler, logger = slow
    for i in range(100):
        logger.info("line %d", i)
    assert stream.getvalue() == ""
    handler.flush()
    assert lines(stream) == [f"INFO line {i}" for i in range(100)]
    handler.flush()  # nothing left: writes nothing again
    assert len(lines(stream)) == 100


def test_shutdown_style_flush_and_close_leaves_nothing_queued(stream: io.StringIO) -> None:
    handler = BatchingStreamHandler(stream, interval=60)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler)
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""
    # What logging.shutdown does with each handler.
    handler.acquire()
    try:
        handler.flush()
        handler.close()
    finally:
        handler.release()
    logger.removeHandler(handler)
    assert lines(stream) == ["one", "two"]


@pytest.fixture
def configured(stream: io.StringIO) -> Iterator[BatchingStreamHandler]:
    """logs.configure()'s set-up, writing to ``stream``; the root logger restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logs.configure("INFO")
    handler = logs._direct
    assert handler is not None
    handler.setStream(stream)
    yield handler
    handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logs._direct = None


def _fields(line: str) -> dict[str, object]:
    out = json.loads(line)
    assert isinstance(out, dict)
    assert out.pop("ts").endswith("Z")
    return out


def test_access_line_written_directly_matches_the_formatted_record(
    stream: io.StringIO, configured: BatchingStreamHandler
) -> None:
    access = logs.AccessLog()
    access.write("/badges.v1.BadgeService/GetBadge", 7, 3, "OK", 0.125, 'ipv4:"odd"\\peer', 'r-"1"')
    access.write("/badges.v1.BadgeService/GetBadge", None, None, "UNAUTHENTICATED", 1.5, "p")
    # The same calls through a LogRecord and JsonFormatter (the path any other set-up takes).
    logging.getLogger("badge_service.access").info(
        "rpc",
        extra={
            "method": "/badges.v1.BadgeService/GetBadge",
            "org": 7,
            "key": 3,
            "status": "OK",
            "duration_ms": 0.125,
            "peer": 'ipv4:"odd"\\peer',
            "request_id": 'r-"1"',
        },
    )
    configured.flush()
    direct_ok, direct_none, formatted = stream.getvalue().splitlines()
    assert _fields(direct_ok) == _fields(formatted)
    assert _fields(direct_none) == {
        "level": "info",
        "logger": "badge_service.access",
        "msg": "rpc",
        "method": "/badges.v1.BadgeService/GetBadge",
        "org": None,
        "key": None,
        "status": "UNAUTHENTICATED",
        "duration_ms": 1.5,
        "peer": "p",
        "request_id": None,
    }


def test_http_access_line_written_directly_matches_the_formatted_record(
    stream: io.StringIO, configured: BatchingStreamHandler
) -> None:
    logs.AccessLog().write_http("GET", '/public/a "b"\\c', 200, 0.25, "127.0.0.1:5", "h-1")
    fields = {
        "method": "GET",
        "path": '/public/a "b"\\c',
        "status": 200,
        "duration_ms": 0.25,
        "peer": "127.0.0.1:5",
        "request_id": "h-1",
    }
    logging.getLogger("badge_service.access").info("http", extra=fields)
    configured.flush()
    direct, formatted = stream.getvalue().splitlines()
    assert _fields(direct) == _fields(formatted)
    assert _fields(direct) == {
        "level": "info",
        "logger": "badge_service.access",
        "msg": "http",
        **fields,
    }


def test_access_lines_take_the_record_path_when_logging_is_set_up_otherwise(
    stream: io.StringIO, configured: BatchingStreamHandler
) -> None:
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    access_logger = logging.getLogger("badge_service.access")
    extra = Collect()
    access_logger.addHandler(extra)
    try:
        logs.AccessLog().write("/m", 1, 2, "NOT_FOUND", 2.0, "peer")
    finally:
        access_logger.removeHandler(extra)
    configured.flush()
    assert [(r.getMessage(), getattr(r, "status", None)) for r in seen] == [("rpc", "NOT_FOUND")]
    (line,) = stream.getvalue().splitlines()  # and the root's handler still wrote it once
    assert _fields(line)["status"] == "NOT_FOUND"


def test_access_log_writes_nothing_above_info(
    stream: io.StringIO, configured: BatchingStreamHandler
) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    logs.AccessLog().write("/m", 1, 2, "OK", 2.0, "peer")
    configured.flush()
    assert stream.getvalue() == ""

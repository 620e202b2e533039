"""Structured JSON logs: one object per line with the component, request id and caller.

The request context lives in a context variable set at the gRPC edge and in
the pipeline, so every line logged while serving a request carries it. A
last-line defence redacts registered secrets (the HSM PIN) should one ever
reach a message; nothing is supposed to log them in the first place.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")

_secrets: set[str] = set()


def bind(**fields: str) -> None:
    """Add fields (request_id, caller, method) to the current request's log context."""
    context.set({**context.get({}), **fields})


def register_secret(value: str) -> None:
    """Never let `value` appear in a log line, whatever logged it."""
    if len(value) >= 4:
        _secrets.add(value)


def _redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "[redacted]")
    return text


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "component", "msg", request context..., "exc"} per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": record.name,
            "msg": record.getMessage(),
            **context.get({}),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _redact(json.dumps(doc, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record))


class _Sink:
    """Whole lines to one file descriptor, one writer at a time (records never interleave)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        return len(text)

    def flush(self) -> None:
        pass  # every write goes straight to the descriptor


# gRPC's C core (glog/absl style): I1201 22:52:49.187401   19358 file.cc:2563] message
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_NATIVE_LEVEL = {"I": "info", "W": "warning", "E": "error", "F": "critical"}


def wrap_line(line: str) -> str:
    """`line` if it is already one JSON object, else a JSON object carrying it."""
    if line.startswith("{"):
        try:
            if isinstance(json.loads(line), dict):
                return line
        except ValueError:
            pass
    now = time.time()
    doc: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
    }
    native = _NATIVE_LINE.match(line)
    if native:
        level, source, message = native.groups()
        doc.update(level=_NATIVE_LEVEL[level], component="grpc", source=source, msg=message)
    else:
        # Whatever else reaches the descriptor: tracebacks, library warnings.
        doc.update(level="warning", component="stderr", msg=line)
    return _redact(json.dumps(doc, ensure_ascii=False))


class _StderrRouter:
    """File descriptor 2 becomes a pipe; a thread turns each line into a JSON object.

    Native code (gRPC's C core, the PKCS#11 library, child processes that
    inherit the descriptor) writes to fd 2 directly, beyond Python's logging.
    """

    def __init__(self) -> None:
        self.out = _Sink(os.dup(2))  # the real stderr; os.dup's copy is not inherited
        read, write = os.pipe()
        os.dup2(write, 2)  # inheritable: spawned children write into the pipe too
        os.close(write)
        self._read = read
        self._marks: dict[str, threading.Event] = {}
        threading.Thread(target=self._pump, name="stderr-router", daemon=True).start()

    def _pump(self) -> None:
        pending = b""
        while True:
            chunk = os.read(self._read, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._emit_safely(raw)
        if pending:
            self._emit_safely(pending)

    def _emit_safely(self, raw: bytes) -> None:
        # This thread must keep draining the pipe whatever happens to the real
        # stderr (closed, a reader gone): a full pipe would block every writer.
        with contextlib.suppress(Exception):  # nowhere left to report it
            self._emit(raw)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "backslashreplace").rstrip("\r")
        mark = self._marks.pop(line, None)
        if mark is not None:
            mark.set()
        elif line.strip():
            self.out.write(wrap_line(line) + "\n")

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until everything written to fd 2 so far has gone out."""
        mark = f"custos-drain-{os.getpid()}-{time.monotonic_ns()}"
        self._marks[mark] = done = threading.Event()
        sys.stderr.flush()
        os.write(2, mark.encode() + b"\n")
        done.wait(timeout)


_router: _StderrRouter | None = None


def route_stderr() -> _Sink:
    """Send fd 2 through the JSON wrapper (once per process); the real stderr's sink."""
    global _router  # noqa: PLW0603 - one router per process
    if _router is None:
        _router = _StderrRouter()
        # Tracebacks printed at exit reach the pipe before atexit runs: drain then.
        atexit.register(_router.drain)
    return _router.out


def configure(level: int, json_lines: bool) -> None:
    # In JSON mode every line on stderr is one JSON object, gRPC's own included.
    stream: Any = route_stderr() if json_lines else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

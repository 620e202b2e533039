"""Structured JSON logs: one object per line with the component, request id and caller.

The request context lives in a context variable set at the gRPC edge and in
the pipeline, so every line logged while serving a request carries it. A
last-line defence redacts registered secrets (the HSM PIN) should one ever
reach a message; nothing is supposed to log them in the first place.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
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


def configure(level: int, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

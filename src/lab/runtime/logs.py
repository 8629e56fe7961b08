"""Logging to stderr as text or JSON (journald picks stderr up as-is), with request ids and
control characters escaped (:mod:`lab.runtime.safetext`).

Each HTTP request a daemon handles runs with :data:`request_id_var` set (see
:func:`begin_request`); :class:`RequestIdFilter`, installed on the handler by
:func:`setup_logging`, copies it onto every record emitted meanwhile as ``request_id``, so the
text format shows ``[rid=…]`` and the JSON format a ``request_id`` field.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from lab.runtime.safetext import EscapeControlFilter

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

REQUEST_ID_HEADER = "X-Request-Id"

request_id_var: ContextVar[str | None] = ContextVar("lab_request_id", default=None)
"""The id of the HTTP request the current task is handling, if any."""

# A client's id is kept only when it is a plain token: it ends up in log lines and the audit
# log, so no spaces, quotes or control characters, and a bounded length.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")


def sane_request_id(value: str | None) -> str | None:
    """``value`` if it is usable as a request id, else None."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return secrets.token_hex(8)


def begin_request(client_value: str | None) -> str:
    """Set (and return) the current task's request id: the client's, if sane, else a new one.

    The variable belongs to the task's context, so it ends with the task that handles the
    request; a caller that reuses its task for several requests calls this for each.
    """
    rid = sane_request_id(client_value) or new_request_id()
    request_id_var.set(rid)
    return rid


def current_request_id() -> str | None:
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` while a request is being handled (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger: [rid=ID] message``; the id only inside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        if rid is None:
            return text
        head, sep, tail = text.partition(": ")
        return f"{head}{sep}[rid={rid}] {tail}" if sep else f"{text} [rid={rid}]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once; ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    # Values in messages come from the network (names, hostnames, agent facts): escape control
    # characters so that no value forges a log line or reaches a terminal as an ESC sequence.
    handler.addFilter(EscapeControlFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn's access log is noisy at info; our own request logging covers it.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)

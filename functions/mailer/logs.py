"""Structured JSON log lines on stdout, the format Cloud Logging parses into jsonPayload.

Only ids, states and domains are logged: never bodies, attachments, full addresses or secrets.
Callers pass context with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

# Python level names to Cloud Logging severities.
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages of third-party exceptions may quote message content.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: int = logging.INFO, stream=None) -> None:
    """Route the `mailer` loggers to one JSON handler (idempotent: safe on every cold start)."""
    logger = logging.getLogger("mailer")
    for handler in list(logger.handlers):
        if getattr(handler, "_mailer_json", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler._mailer_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def domain_of(address: str) -> str:
    """The part of an address that may be logged."""
    return address.rpartition("@")[2].lower() or "?"

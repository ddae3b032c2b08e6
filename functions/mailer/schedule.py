"""`sendAt`: when a document may be sent at the earliest.

A Firestore timestamp, or an ISO 8601 string with an explicit offset ("2026-12-24T09:00:00+01:00",
"...Z"). A string without an offset is refused rather than guessed: the function runs in UTC, the app
that wrote it probably did not.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

FIELD = "sendAt"
_EXAMPLE = '"2026-12-24T09:00:00+01:00"'


class ScheduleError(ValueError):
    """`sendAt` cannot be read. str(e) names the field."""


def send_at(fields: dict[str, Any]) -> datetime | None:
    """The document's `sendAt` as an aware UTC datetime, or None when it has none (null counts as none)."""
    value = fields.get(FIELD)
    if value is None:
        return None
    if isinstance(value, datetime):  # Firestore timestamps decode to aware datetimes
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise ScheduleError(f"{FIELD}: expected a timestamp or an ISO 8601 string such as {_EXAMPLE}, got {type(value).__name__}")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ScheduleError(f"{FIELD}: {value[:40]!r} is not an ISO 8601 date and time such as {_EXAMPLE}") from None
    if moment.tzinfo is None:
        raise ScheduleError(f"{FIELD}: {value[:40]!r} has no UTC offset; add one, e.g. {_EXAMPLE} or a trailing Z")
    return moment.astimezone(timezone.utc)

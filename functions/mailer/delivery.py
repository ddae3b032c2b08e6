"""The `delivery` record: which documents to act on, and what each status write contains.

Pure functions, no I/O. States: PENDING, PROCESSING, RETRY, SUCCESS, ERROR. Every write replaces the
whole `delivery` map, so no write depends on field deletes or nested server transforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

PENDING = "PENDING"
PROCESSING = "PROCESSING"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
ERROR = "ERROR"

# States a client may leave a document in to have it sent (RETRY: "try again").
_WAITING = (None, PENDING, RETRY)


def delivery_of(fields: dict[str, Any]) -> dict[str, Any]:
    value = fields.get("delivery")
    return value if isinstance(value, dict) else {}


def state_of(fields: dict[str, Any] | None) -> str | None:
    if fields is None:
        return None
    state = delivery_of(fields).get("state")
    return state if isinstance(state, str) else None


def is_claimable(fields: dict[str, Any], now: datetime) -> bool:
    """Whether an attempt may start now: waiting to be sent, or a PROCESSING claim whose lease lapsed
    (the attempt holding it crashed or timed out)."""
    state = state_of(fields)
    if state in _WAITING:
        return True
    if state == PROCESSING:
        lease = delivery_of(fields).get("leaseExpireTime")
        return not isinstance(lease, datetime) or lease <= now
    return False


def wants_attempt(kind: str, fields: dict[str, Any], old_fields: dict[str, Any] | None, now: datetime) -> bool:
    """Whether this event should start an attempt.

    A new document is sent. On an update, only a client's request counts: a finished document
    (SUCCESS or ERROR) set back to RETRY or PENDING, or stripped of its delivery record. The function's
    own status writes never qualify, so a `written`/`updated` trigger cannot loop.
    """
    if kind == "created" or old_fields is None:
        return is_claimable(fields, now)
    return state_of(old_fields) in (SUCCESS, ERROR) and state_of(fields) in _WAITING


@dataclass(frozen=True)
class Info:
    message_id: str | None = None
    accepted: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    response: str | None = None

    def as_map(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "accepted": list(self.accepted),
            "rejected": list(self.rejected),
            "pending": list(self.pending),
            "response": self.response,
        }


def claim(previous: dict[str, Any], now: datetime, lease: timedelta) -> dict[str, Any]:
    """The PROCESSING record that marks this attempt as the one sending."""
    start = previous.get("startTime")
    attempts = previous.get("attempts")
    return {
        "state": PROCESSING,
        "attempts": (attempts if isinstance(attempts, int) else 0) + 1,
        "startTime": start if isinstance(start, datetime) else now,
        "endTime": None,
        "leaseExpireTime": now + lease,
        "error": None,
        "info": None,
    }


def finish(
    claimed: dict[str, Any],
    state: str,
    now: datetime,
    *,
    error: str | None = None,
    info: Info | None = None,
    ttl: timedelta | None = None,
) -> dict[str, Any]:
    """The record ending an attempt. Final states get `expireAt` when TTL is configured; RETRY does not
    (the document is still owed an email)."""
    record = {
        **claimed,
        "state": state,
        "endTime": now,
        "leaseExpireTime": None,
        "error": error,
        "info": info.as_map() if info else None,
    }
    if ttl is not None and state in (SUCCESS, ERROR):
        record["expireAt"] = now + ttl
    return record


def with_unresolved_uids(record: dict[str, Any], unresolved: list[dict[str, str]]) -> dict[str, Any]:
    """A final record listing the toUids/ccUids/bccUids that gave no address ({uid, reason} each);
    unchanged when every uid resolved, so the field only appears when there is something to say."""
    if not unresolved:
        return record
    return {**record, "unresolvedUids": [dict(item) for item in unresolved]}

"""The `delivery` record: which documents to act on, and what each status write contains.

Pure functions, no I/O. States: PENDING, PROCESSING, RETRY, SUCCESS, ERROR. Every write replaces the
whole `delivery` map, so no write depends on field deletes or nested server transforms.

One *delivery* of a document is the sequence of attempts that share a Message-ID: the first attempt,
the automatic retries after transient failures, takeovers of attempts that died, and a client's RETRY
of a document that ended in ERROR. A client's RETRY or PENDING on a SUCCESS document starts a new
delivery (a new Message-ID, every recipient again). Recipients that accepted the message are never
sent it again within one delivery.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

PENDING = "PENDING"
PROCESSING = "PROCESSING"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
ERROR = "ERROR"

# States a client may leave a document in to have it sent (RETRY: "try again").
_WAITING = (None, PENDING, RETRY)
# Failed attempts kept in `attemptHistory` (the newest), and the length of each reason there.
HISTORY_LIMIT = 10
HISTORY_REASON_CHARS = 300
LOST_ATTEMPT = "the attempt did not finish before its lease lapsed (the instance stopped, crashed or timed out)"


def delivery_of(fields: dict[str, Any]) -> dict[str, Any]:
    value = fields.get("delivery")
    return value if isinstance(value, dict) else {}


def state_of(fields: dict[str, Any] | None) -> str | None:
    if fields is None:
        return None
    state = delivery_of(fields).get("state")
    return state if isinstance(state, str) else None


def _time(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def next_attempt_time(record: dict[str, Any]) -> datetime | None:
    return _time(record.get("nextAttemptTime"))


def attempts_of(record: dict[str, Any]) -> int:
    attempts = record.get("attempts")
    return attempts if isinstance(attempts, int) and attempts >= 0 else 0


def lease_lapsed(record: dict[str, Any], now: datetime) -> bool:
    """A PROCESSING claim whose attempt can no longer be running (a claim without a lease never ends
    otherwise, so it counts as lapsed)."""
    lease = _time(record.get("leaseExpireTime"))
    return lease is None or lease <= now


def is_claimable(fields: dict[str, Any], now: datetime) -> bool:
    """Whether an attempt may start now: waiting to be sent and due (no `nextAttemptTime`, or one that
    has passed), or a PROCESSING claim whose lease lapsed (the attempt holding it died)."""
    state = state_of(fields)
    record = delivery_of(fields)
    if state in _WAITING:
        due = next_attempt_time(record)
        return due is None or due <= now
    if state == PROCESSING:
        return lease_lapsed(record, now)
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


def is_client_request(record: dict[str, Any]) -> bool:
    """A waiting state the function did not write: the function's RETRY and scheduled PENDING always
    carry `nextAttemptTime`, its final records set it to null, and a client asking for another attempt
    sets only `state`."""
    return record.get("state") in (PENDING, RETRY) and next_attempt_time(record) is None and attempts_of(record) > 0


def continues_delivery(record: dict[str, Any]) -> bool:
    """Whether the next attempt belongs to the same delivery as the last one (same Message-ID, recipients
    who accepted are skipped): an automatic retry, a takeover, or a client's RETRY after an ERROR (the
    record still holds that error). A client's request after SUCCESS starts a new delivery."""
    if not isinstance(record.get("messageId"), str):
        return False
    if is_client_request(record):
        return bool(record.get("error"))
    return record.get("state") in (PENDING, RETRY, PROCESSING)


# Recipients listed by address in `info.accepted`, `rejected` and `pending` (the first ones); counts say
# how many there are in all. Every document stays well under Firestore's 1 MiB whatever its recipient
# count (prepare.MAX_RECIPIENTS bounds it), and the record does not copy a whole Bcc list.
INFO_LIST_LIMIT = 50
# Beyond the limit, who accepted or was refused for good is kept as 8-byte digests (SHA-256 prefixes) in
# `info.acceptedDigest` / `info.rejectedDigest`, so a retry still skips them: 80 KB for 10,000.
DIGEST_BYTES = 8


def recipient_digest(address: str) -> bytes:
    return hashlib.sha256(address.encode("utf-8", "surrogatepass")).digest()[:DIGEST_BYTES]


@dataclass(frozen=True)
class Recipients:
    """A set of envelope recipients as the record keeps it: the first INFO_LIST_LIMIT by address (in the
    order they were settled), every member by digest, and the count."""

    listed: tuple[str, ...] = ()
    count: int = 0
    digests: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, addresses: Iterable[str]) -> Recipients:
        return cls().plus(addresses)

    @classmethod
    def from_record(cls, info: dict[str, Any], name: str) -> Recipients:
        listed = _strings(info.get(name))
        digests = {recipient_digest(address) for address in listed}
        packed = info.get(f"{name}Digest")
        if isinstance(packed, bytes):
            digests.update(packed[i:i + DIGEST_BYTES] for i in range(0, len(packed) - DIGEST_BYTES + 1, DIGEST_BYTES))
        count = info.get(f"{name}Count")
        count = count if isinstance(count, int) and count >= len(digests) else len(digests)
        return cls(tuple(dict.fromkeys(listed))[:INFO_LIST_LIMIT], count, frozenset(digests))

    def __contains__(self, address: object) -> bool:
        # Empty on every first attempt: no hashing per recipient then.
        return bool(self.digests) and isinstance(address, str) and recipient_digest(address) in self.digests

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def plus(self, addresses: Iterable[str]) -> Recipients:
        listed, digests, count = list(self.listed), set(self.digests), self.count
        for address in addresses:
            key = recipient_digest(address)
            if key in digests:
                continue
            digests.add(key)
            count += 1
            if len(listed) < INFO_LIST_LIMIT:
                listed.append(address)
        return Recipients(tuple(listed), count, frozenset(digests))

    def write(self, info: dict[str, Any], name: str, digests: bool) -> None:
        info[name] = list(self.listed)
        info[f"{name}Count"] = self.count
        if digests and self.count > len(self.listed):  # only long lists need digests; short ones are complete
            info[f"{name}Digest"] = b"".join(sorted(self.digests))


@dataclass(frozen=True)
class Info:
    message_id: str | None = None
    accepted: Recipients = Recipients()
    rejected: Recipients = Recipients()
    pending: Recipients = Recipients()
    response: str | None = None

    def __post_init__(self) -> None:
        for name in ("accepted", "rejected", "pending"):  # plain lists of addresses are accepted too
            value = getattr(self, name)
            if not isinstance(value, Recipients):
                object.__setattr__(self, name, Recipients.of(value))

    def as_map(self, *, digests: bool = True) -> dict[str, Any]:
        """The record's `info`. Digests are left out once nothing more will be sent in this delivery."""
        info: dict[str, Any] = {"messageId": self.message_id}
        self.accepted.write(info, "accepted", digests)
        self.rejected.write(info, "rejected", digests)
        self.pending.write(info, "pending", False)  # pending recipients are owed anyway: never skipped
        info["response"] = self.response
        return info


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def carried_info(record: dict[str, Any]) -> Info:
    """What an earlier attempt of the same delivery established: who accepted, who refused for good."""
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    # A client's RETRY asks the recipients refused for good again.
    rejected = Recipients() if is_client_request(record) else Recipients.from_record(info, "rejected")
    return Info(
        message_id=record.get("messageId"),
        accepted=Recipients.from_record(info, "accepted"),
        rejected=rejected,
        pending=Recipients.from_record(info, "pending"),
        response=info.get("response") if isinstance(info.get("response"), str) else None,
    )


def owed_recipients(recipients: Iterable[str], carried: Info) -> list[str]:
    """The envelope recipients this attempt still has to reach."""
    return [r for r in recipients if r not in carried.accepted and r not in carried.rejected]


def merged_info(carried: Info, message_id: str, *, accepted: Iterable[str] = (), rejected: Iterable[str] = (),
                pending: Iterable[str] = (), response: str | None = None) -> Info:
    """This attempt's results added to the delivery's (each recipient counted once, first result kept).
    Pending is this attempt's alone: who is still owed after it."""
    accepted_all = carried.accepted.plus(accepted)
    rejected_all = carried.rejected.plus(r for r in rejected if r not in accepted_all)
    pending_now = Recipients.of(r for r in pending if r not in accepted_all and r not in rejected_all)
    return Info(message_id, accepted_all, rejected_all, pending_now, response or carried.response)


def history_entry(attempt: int, now: datetime, reason: str, *, outcome_unknown: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"attempt": attempt, "time": now, "error": reason[:HISTORY_REASON_CHARS]}
    if outcome_unknown:
        entry["outcomeUnknown"] = True
    return entry


def with_history(history: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [*history, entry][-HISTORY_LIMIT:]


def history_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    value = record.get("attemptHistory")
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def claim(
    previous: dict[str, Any],
    now: datetime,
    lease: timedelta,
    *,
    message_id: str | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The PROCESSING record that marks this attempt as the one sending. Within one delivery it carries
    the results so far (info), the history and whether a copy may already have been delivered."""
    start = previous.get("startTime")
    continuing = continues_delivery(previous)
    return {
        "state": PROCESSING,
        "attempts": attempts_of(previous) + 1,
        "startTime": start if isinstance(start, datetime) else now,
        "endTime": None,
        "leaseExpireTime": now + lease,
        "nextAttemptTime": None,
        "error": None,
        "info": carried_info(previous).as_map() if continuing else None,
        "messageId": message_id,
        "attemptHistory": history_of(previous) if history is None else history,
        "outcomeUnknown": bool(previous.get("outcomeUnknown")) if continuing else False,
    }


def scheduled(previous: dict[str, Any], send_at: datetime) -> dict[str, Any]:
    """PENDING until `send_at`: the sweep sends it once that time has passed."""
    return {
        "state": PENDING,
        "attempts": attempts_of(previous),
        "startTime": _time(previous.get("startTime")),
        "endTime": None,
        "leaseExpireTime": None,
        "nextAttemptTime": send_at,
        "error": None,
        "info": None,
        "messageId": None,
        "attemptHistory": history_of(previous),
        "outcomeUnknown": False,
    }


def finish(
    claimed: dict[str, Any],
    state: str,
    now: datetime,
    *,
    error: str | None = None,
    info: Info | None = None,
    ttl: timedelta | None = None,
    next_attempt: datetime | None = None,
) -> dict[str, Any]:
    """The record ending an attempt. Final states get `expireAt` when TTL is configured; RETRY does not
    (the document is still owed an email)."""
    record = {
        **claimed,
        "state": state,
        "endTime": now,
        "leaseExpireTime": None,
        "nextAttemptTime": next_attempt,
        "error": error,
        # After SUCCESS a client's request starts a new delivery: the digests would never be read again.
        "info": info.as_map(digests=state != SUCCESS) if info else None,
    }
    if ttl is not None and state in (SUCCESS, ERROR):
        record["expireAt"] = now + ttl
    return record


def backoff_delay(attempt: int, base: timedelta, cap: timedelta, rng: Callable[[], float] = random.random) -> timedelta:
    """The wait after failed attempt `attempt` (1-based): base * 2^(attempt-1), capped, then shortened by
    up to half at random ("equal jitter"), so retries of a burst spread out but are never later than
    the schedule."""
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    return ceiling * (1.0 - 0.5 * rng())


def failed(
    claimed: dict[str, Any],
    now: datetime,
    reason: str,
    *,
    transient: bool,
    info: Info | None,
    max_attempts: int,
    backoff: Callable[[int], timedelta],
    ttl: timedelta | None = None,
    outcome_unknown: bool = False,
) -> dict[str, Any]:
    """The record after a failed attempt: RETRY with the next attempt's time while attempts remain and
    the failure is transient, else ERROR with the last reason. Every failure goes into the history."""
    attempt = attempts_of(claimed)
    record = {
        **claimed,
        "attemptHistory": with_history(history_of(claimed), history_entry(attempt, now, reason, outcome_unknown=outcome_unknown)),
        "outcomeUnknown": bool(claimed.get("outcomeUnknown")) or outcome_unknown,
    }
    if transient and attempt < max_attempts:
        return finish(record, RETRY, now, error=reason, info=info, ttl=ttl, next_attempt=now + backoff(attempt))
    if transient:
        reason = f"gave up after {attempt} attempt{'s' if attempt != 1 else ''}; last: {reason}"
    return finish(record, ERROR, now, error=reason, info=info, ttl=ttl)


def with_unresolved_uids(record: dict[str, Any], unresolved: list[dict[str, str]]) -> dict[str, Any]:
    """A final record listing the toUids/ccUids/bccUids that gave no address ({uid, reason} each);
    unchanged when every uid resolved, so the field only appears when there is something to say."""
    if not unresolved:
        return record
    return {**record, "unresolvedUids": [dict(item) for item in unresolved]}

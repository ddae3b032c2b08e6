"""Lifecycle events, as the extension's `events` parameter offers them: one CloudEvent per real transition of
a document's `delivery`, with the extension's event types (firebase.extensions.firestore-send-email.v1.*).

"Real" means the caller has just written the transition, with a precondition that made it the only writer
(the claim, a refusal, a schedule) or as the holder of the claim (the outcome), so a redelivered trigger
event or a lost race never publishes: it wrote nothing. What each transition publishes:

    no delivery yet -> any state     onStart first (the document enters the pipeline; once per document)
    -> PROCESSING                    onProcessing (an attempt claimed the document)
    -> PENDING                       onPending (scheduled for sendAt)
    -> RETRY                         onRetry (the attempt failed transiently; another is due)
    -> SUCCESS                       onSuccess, onComplete
    -> ERROR                         onError, onComplete

Only the names in EVENTS are published, to EVENTS_TOPIC (Pub/Sub, CloudEvents binary mode: `ce-*`
attributes, JSON data) or EVENTS_CHANNEL (Eventarc, structured JSON CloudEvents). The client libraries
are imported the first time an event is published, never when EVENTS is empty: cold start does not grow.

A publish is one synchronous call with a short deadline (PUBLISH_TIMEOUT_SECONDS) and no retry: a failure
is logged (WARNING "lifecycle event not published": types, document path, state, error class; never
addresses or the record) and the mail goes on; the next event opens a new connection. The document's
`delivery` stays the truth; each event's id is derived from the transition, so a consumer can drop a copy
by `id`.

A destination that accepts connections but never answers would cost every transition the whole deadline,
so a *slow* failure (DEADLINE_EXCEEDED, or any failure that took SLOW_FAILURE_SECONDS or more) holds that
destination off, per process: for HOLD_OFF_FIRST_SECONDS after the first, doubling with each consecutive
slow failure, at most HOLD_OFF_MAX_SECONDS. While held off no publish is attempted; each skipped transition
logs the same warning with `heldOffUntil` (RFC 3339, UTC) and a `reason`. The first transition after the
hold-off publishes as usual (one probe at a time; transitions during the probe are skipped the same way):
success ends the back-off, another slow failure doubles it; a probe still out PROBE_LOST_AFTER_SECONDS past
its deadline counts as one (so a probe that never returns cannot hold publishing off for good). A fast failure (connection refused,
PERMISSION_DENIED, UNAVAILABLE within milliseconds) costs nothing and neither starts nor extends a
hold-off, so events resume as soon as the receiver is back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from mailer.settings import EventSettings, Settings

log = logging.getLogger("mailer.lifecycle")

TYPE_PREFIX = "firebase.extensions.firestore-send-email.v1."
# One publish call (all the events of one transition) waits at most this long; it is never retried.
PUBLISH_TIMEOUT_SECONDS = 5.0
# A failed publish that took at least this long (or hit its deadline) was slow: it holds the destination off.
SLOW_FAILURE_SECONDS = 1.0
# The hold-off after the first slow failure; it doubles with each consecutive one, up to the maximum.
HOLD_OFF_FIRST_SECONDS = 30.0
HOLD_OFF_MAX_SECONDS = 300.0
# A probe still out this long after its deadline is taken as lost (a stuck channel or credential fetch):
# it counts as one more slow failure, and after that hold-off another probe goes out.
PROBE_LOST_AFTER_SECONDS = 10.0
HELD_OFF_REASON = "the events destination timed out or failed slowly; publishing resumes at heldOffUntil"
PROBING_REASON = ("the events destination timed out; one publish is testing it, "
                  "publishing resumes if it answers by heldOffUntil")

_FOR_STATE = {
    "PROCESSING": ("onProcessing",),
    "PENDING": ("onPending",),
    "RETRY": ("onRetry",),
    "SUCCESS": ("onSuccess", "onComplete"),
    "ERROR": ("onError", "onComplete"),
}


def names_for(before: str | None, after: str | None) -> list[str]:
    """The event short names a transition from state `before` (None: no delivery record) to `after` makes."""
    names = ["onStart"] if before is None else []
    return names + list(_FOR_STATE.get(after or "", ()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def build_events(
    names: list[str], *, project: str, database: str, path: str, record: dict[str, Any], version: datetime | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """CloudEvents (structured form, as dicts) for one transition. `version` is the update_time that
    identifies it (the claim's, for the outcome of that claim): the same transition always gets the same id."""
    doc_id = path.rpartition("/")[2]
    collection = path.rpartition("/")[0]
    stamp = _jsonable(version) if version is not None else ""
    delivery = _jsonable(record)
    events = []
    for name in names:
        data: dict[str, Any] = {"doc": {"id": doc_id, "path": path, "delivery": delivery}}
        if name in ("onError", "onRetry") and record.get("error"):
            data["err"] = record["error"]
        digest = hashlib.sha256(f"{project}/{database}/{path}@{stamp}#{record.get('state')}#{name}".encode()).hexdigest()
        events.append({
            "specversion": "1.0",
            "id": digest[:32],
            "type": TYPE_PREFIX + name,
            "source": f"//firestore.googleapis.com/projects/{project}/databases/{database}/documents/{collection}",
            "subject": doc_id,
            "time": _jsonable(now),
            "datacontenttype": "application/json",
            "data": data,
        })
    return events


class _PubSubPublisher:
    """Pub/Sub through the generated client's one Publish RPC: no batching threads to start or drain."""

    def __init__(self, topic: str, endpoint: str | None) -> None:
        from google.pubsub_v1.services.publisher import PublisherClient
        from google.pubsub_v1.types import PubsubMessage

        self._message = PubsubMessage
        self._topic = topic
        if endpoint:
            import grpc
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            self._client = PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(endpoint)))
        else:
            self._client = PublisherClient()

    def publish(self, events: list[dict[str, Any]]) -> None:
        messages = []
        for event in events:
            attributes = {f"ce-{key}": str(value) for key, value in event.items() if key not in ("data", "datacontenttype")}
            attributes["content-type"] = event["datacontenttype"]
            data = json.dumps(event["data"], ensure_ascii=False, separators=(",", ":")).encode()
            messages.append(self._message(data=data, attributes=attributes))
        self._client.publish(topic=self._topic, messages=messages, retry=None, timeout=PUBLISH_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._client.transport.close()


class _EventarcPublisher:
    """An Eventarc channel: PublishEvents with structured JSON CloudEvents (`text_events`)."""

    def __init__(self, channel: str, endpoint: str | None) -> None:
        from google.cloud.eventarc_publishing_v1 import PublisherClient

        self._channel = channel
        if endpoint:
            import grpc
            from google.cloud.eventarc_publishing_v1.services.publisher.transports import PublisherGrpcTransport

            self._client = PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(endpoint)))
        else:
            self._client = PublisherClient()

    def publish(self, events: list[dict[str, Any]]) -> None:
        texts = [json.dumps(event, ensure_ascii=False, separators=(",", ":")) for event in events]
        self._client.publish_events(
            request={"channel": self._channel, "text_events": texts}, retry=None, timeout=PUBLISH_TIMEOUT_SECONDS
        )

    def close(self) -> None:
        self._client.transport.close()


_publishers: dict[EventSettings, Any] = {}
_publishers_lock = threading.Lock()


def _destination(config: EventSettings) -> EventSettings:
    return EventSettings(names=(), topic=config.topic, channel=config.channel, endpoint=config.endpoint)


def forget_publisher(config: EventSettings, failed: Any) -> None:
    """Drop the publisher that failed, so the next event opens a new connection at once instead of waiting
    out gRPC's reconnect backoff (up to two minutes) on the old one. Only that one: another thread may
    already have replaced it, and closing the replacement would fail that thread's publish too."""
    with _publishers_lock:
        key = _destination(config)
        publisher = _publishers.pop(key) if _publishers.get(key) is failed else None
    if publisher is not None:
        try:
            publisher.close()
        except Exception:  # closing a broken channel must not matter either
            pass


def publisher_for(config: EventSettings) -> Any:
    """One publisher (one gRPC channel) per destination for the life of the instance, until a publish fails."""
    key = _destination(config)
    with _publishers_lock:
        if key not in _publishers:
            if config.topic:
                _publishers[key] = _PubSubPublisher(config.topic, config.endpoint)
            else:
                _publishers[key] = _EventarcPublisher(config.channel or "", config.endpoint)
        return _publishers[key]


# --- hold-off of a destination whose publishes time out (per process) ---

_clock = time.monotonic  # the tests' seam


def hold_off_seconds(failures: int) -> float:
    """How long a destination is held off after `failures` consecutive slow failures (0: not at all)."""
    if failures <= 0:
        return 0.0
    return min(HOLD_OFF_FIRST_SECONDS * 2 ** min(failures - 1, 32), HOLD_OFF_MAX_SECONDS)


@dataclass
class _HoldOff:
    failures: int = 0                 # consecutive slow failures
    failed_at: float = float("-inf")  # _clock() when the last of them was recorded
    probe_started: float | None = None  # _clock() when the publish testing the destination began, if one is out
    probe_thread: int | None = None  # the thread running it (a lost probe that returns late ends no other)

    def until(self) -> float:
        return self.failed_at + hold_off_seconds(self.failures)


_hold_offs: dict[EventSettings, _HoldOff] = {}
# _clock() when a publish to the destination last succeeded: a publish begun before that which then fails
# slowly went out during an outage the destination has since recovered from (another thread's success).
_answered: dict[EventSettings, float] = {}
_hold_offs_lock = threading.Lock()


def _wall(moment: float) -> str:
    """A _clock() reading as an RFC 3339 UTC timestamp."""
    wall = datetime.now(timezone.utc) + timedelta(seconds=moment - _clock())
    return wall.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _admit(key: EventSettings) -> tuple[float | None, str]:
    """May a publish to `key` go out now? (None, "probe" or "") if so, else (held off until, reason)."""
    now = _clock()
    with _hold_offs_lock:
        state = _hold_offs.get(key)
        if state is None:
            return None, ""
        if now < state.until():
            return state.until(), HELD_OFF_REASON
        if state.probe_started is not None:
            answer_by = state.probe_started + PUBLISH_TIMEOUT_SECONDS + PROBE_LOST_AFTER_SECONDS
            if now < answer_by:
                return answer_by, PROBING_REASON
            # The probe never returned: one more slow failure (it is not counted again if it ever does).
            state.probe_started = state.probe_thread = None
            state.failures += 1
            state.failed_at = now
            return state.until(), HELD_OFF_REASON
        state.probe_started, state.probe_thread = now, threading.get_ident()
        return None, "probe"


def _settle(key: EventSettings, started: float | None, probe: bool, failed: BaseException | None) -> float | None:
    """Record the outcome of a publish begun at `started` (None: it failed before reaching the destination);
    returns the hold-off's end when this failure started or doubled one."""
    now = _clock()
    code = getattr(getattr(failed, "grpc_status_code", None), "name", None)
    with _hold_offs_lock:
        state = _hold_offs.get(key)
        if failed is None:  # the destination answered: the back-off starts again from zero
            _hold_offs.pop(key, None)
            _answered[key] = now
            return None
        if probe and state is not None and state.probe_thread == threading.get_ident():
            state.probe_started = state.probe_thread = None
        if started is None or (code != "DEADLINE_EXCEEDED" and now - started < SLOW_FAILURE_SECONDS):
            return None  # a fast failure costs nothing: it neither starts nor extends a hold-off
        if _answered.get(key, float("-inf")) > started:
            return None  # the destination answered another publish since this one began: it is back
        if state is None:
            state = _hold_offs[key] = _HoldOff()
        if state.failed_at >= started:
            # Another publish that was out at the same time already counted this outage: not again.
            return None
        state.failures += 1
        state.failed_at = now
        return state.until()


def emit(
    settings: Settings, *, project: str, database: str, path: str, before: str | None, record: dict[str, Any],
    version: datetime | None,
) -> list[str]:
    """Publish the enabled events of one transition the caller has just written. Never raises; returns the
    short names published (empty when disabled, nothing enabled applies, the destination is held off or the
    publish failed)."""
    config = settings.events
    if config is None:
        return []
    names = [name for name in names_for(before, record.get("state")) if name in config.names]
    if not names:
        return []
    fields = {"document": path, "eventTypes": names, "state": record.get("state")}
    key = _destination(config)
    held_until, note = _admit(key)
    if held_until is not None:
        log.warning("lifecycle event not published", extra={"fields": {
            **fields, "heldOffUntil": _wall(held_until), "reason": note}})
        return []
    publisher = None
    started: float | None = None
    # Until the publish returns; an interruption (not an Exception) still ends a probe in `finally`.
    failure: BaseException | None = RuntimeError("publish interrupted")
    try:
        events = build_events(names, project=project, database=database, path=path, record=record,
                              version=version, now=datetime.now(timezone.utc))
        publisher = publisher_for(config)
        started = _clock()  # the publish alone: importing the client or making the channel is not the destination
        publisher.publish(events)
        failure = None
    except Exception as exc:  # the mail never waits on, retries for or fails because of an event
        failure = exc
    finally:
        held_until = _settle(key, started, note == "probe", failure)
    if failure is not None:
        code_name = getattr(getattr(failure, "grpc_status_code", None), "name", None)
        log.warning("lifecycle event not published", extra={"fields": {
            **fields, "exception": type(failure).__name__, **({"grpcCode": code_name} if code_name else {}),
            **({"heldOffUntil": _wall(held_until), "reason": HELD_OFF_REASON} if held_until is not None else {})}})
        if publisher is not None:
            forget_publisher(config, publisher)
        return []
    log.debug("lifecycle events published", extra={"fields": fields})
    return names

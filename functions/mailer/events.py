"""Decode the CloudEvents Eventarc delivers for Firestore document changes.

Eventarc sends them in binary mode with `content-type: application/protobuf`; the body is a
`google.events.cloud.firestore.v1.DocumentEventData`. For a create, `old_value` is an empty message
(not absent), and for a delete `value` is; both are mapped to None here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.events.cloud.firestore_v1.types import data as firestore_data

from mailer.firestore_values import decode_fields

EVENT_TYPE_PREFIX = "google.cloud.firestore.document.v1."
EVENT_KINDS = ("created", "updated", "written", "deleted")
_DOCUMENT_NAME = re.compile(r"^projects/([^/]+)/databases/([^/]+)/documents/(.+)$")


class EventError(ValueError):
    """The event is not a Firestore document event this function can read."""


@dataclass(frozen=True)
class DocumentState:
    fields: dict[str, Any]
    # Exactly as Firestore stamped it (nanoseconds kept): the claim's precondition compares it.
    update_time: DatetimeWithNanoseconds


@dataclass(frozen=True)
class MailEvent:
    id: str
    kind: str  # one of EVENT_KINDS
    project: str
    database: str
    path: str  # relative document path, e.g. "mail/abc"
    value: DocumentState | None
    old_value: DocumentState | None


def _state(document: Any) -> DocumentState | None:
    if not document.name:  # empty message: the document did not exist on this side of the change
        return None
    return DocumentState(
        fields=decode_fields(document.fields),
        update_time=DatetimeWithNanoseconds.from_timestamp_pb(document.update_time),
    )


def _kind(event_type: str) -> str:
    # Types may carry a suffix such as ".withAuthContext"; the kind is the segment after the prefix.
    if event_type.startswith(EVENT_TYPE_PREFIX):
        kind = event_type[len(EVENT_TYPE_PREFIX):].split(".", 1)[0]
        if kind in EVENT_KINDS:
            return kind
    raise EventError(f"unsupported event type {event_type!r}; expected {EVENT_TYPE_PREFIX}<{'|'.join(EVENT_KINDS)}>")


def decode_event(event: Any) -> MailEvent:
    """Decode a functions-framework CloudEvent. Raises EventError with a one-line reason."""
    kind = _kind(event["type"])
    payload = event.get_data()
    if payload is None:  # an empty body: the SDK gives None, protobuf reads it as an empty message
        payload = b""
    if not isinstance(payload, (bytes, bytearray)):
        raise EventError(
            f"event data is {type(payload).__name__}, expected protobuf bytes "
            f"(content type {event.get('datacontenttype')!r}; Firestore triggers must use application/protobuf)"
        )
    try:
        data = firestore_data.DocumentEventData.pb().FromString(bytes(payload))
    except Exception as exc:  # protobuf raises DecodeError; any failure means the same thing here
        raise EventError(f"event data is not a DocumentEventData protobuf ({type(exc).__name__})") from None
    name = data.value.name or data.old_value.name
    match = _DOCUMENT_NAME.match(name)
    if not match:
        raise EventError(f"event carries no valid document name (got {name!r})")
    project, database, path = match.groups()
    return MailEvent(
        id=str(event["id"]),
        kind=kind,
        project=project,
        database=database,
        path=path,
        value=_state(data.value),
        old_value=_state(data.old_value),
    )

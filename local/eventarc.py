"""Events as Eventarc delivers them in binary mode: Firestore document changes (protobuf body), and
Pub/Sub messages (JSON body) such as Cloud Scheduler's ticks for the sweep.

Used by the local trigger bridge, the local scheduler and the tests, so local runs see byte-for-byte what
the deployed functions see: the same event types, the same document filter, the same bodies.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timezone

from google.events.cloud.firestore_v1.types import data as firestore_data

EVENT_TYPE_PREFIX = "google.cloud.firestore.document.v1."
DATA_SCHEMA = "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto"

# Which change kinds each trigger event type receives.
_RECEIVES = {
    "created": {"created"},
    "updated": {"updated"},
    "deleted": {"deleted"},
    "written": {"created", "updated", "deleted"},
}


def receives(event_type: str, change_kind: str) -> bool:
    """Whether a trigger of `event_type` (e.g. google.cloud.firestore.document.v1.created) fires for a
    change of kind created|updated|deleted."""
    trigger = event_type.removeprefix(EVENT_TYPE_PREFIX).split(".", 1)[0]
    return change_kind in _RECEIVES.get(trigger, set())


def path_pattern(pattern: str) -> re.Pattern[str]:
    """Eventarc's `match-path-pattern` for a document filter: `{name}` matches one segment,
    `{name=**}` any number of segments."""
    parts = []
    for segment in pattern.strip("/").split("/"):
        if re.fullmatch(r"\{[^}=]+=\*\*\}", segment):
            parts.append(r".+")
        elif re.fullmatch(r"\{[^}]+\}|\*", segment):
            parts.append(r"[^/]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("^" + "/".join(parts) + "$")


def document_event_data(old: bytes | None, new: bytes | None) -> bytes:
    """Serialize a DocumentEventData from two google.firestore.v1.Document protobufs (either may be
    None). Both messages share field numbers, so the emulator's bytes parse as the event's Document."""
    data = firestore_data.DocumentEventData.pb()()
    if new:
        data.value.ParseFromString(new)
    if old:
        data.old_value.ParseFromString(old)
    return data.SerializeToString()


def binary_event(
    event_type: str,
    *,
    project: str,
    database: str,
    path: str,
    old: bytes | None,
    new: bytes | None,
    location: str = "nam5",
    event_id: str | None = None,
    time: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    """HTTP headers and body of a binary-mode CloudEvent, as Eventarc posts it to the function."""
    moment = (time or datetime.now(timezone.utc)).astimezone(timezone.utc)
    headers = {
        "content-type": "application/protobuf",
        "ce-specversion": "1.0",
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-type": event_type,
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/{database}",
        "ce-subject": f"documents/{path}",
        "ce-time": moment.isoformat().replace("+00:00", "Z"),
        "ce-dataschema": DATA_SCHEMA,
        "ce-location": location,
        "ce-project": project,
        "ce-database": database,
        "ce-namespace": "(default)",
        "ce-document": path,
    }
    return headers, document_event_data(old, new)


# -- Pub/Sub: Cloud Scheduler -> topic -> Eventarc -> the sweep function ------------------------------

PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def pubsub_event(
    *,
    project: str,
    topic: str,
    subscription: str,
    data: bytes = b"",
    message_id: str | None = None,
    time: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    """HTTP headers and body of a binary-mode CloudEvent for one Pub/Sub message, as Eventarc posts it
    (the `MessagePublishedData` JSON body: the message with base64 data, and the push subscription)."""
    moment = _rfc3339(time or datetime.now(timezone.utc))
    message_id = message_id or str(uuid.uuid4().int % 10**16)  # Pub/Sub's ids are decimal strings
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": message_id,
        "ce-type": PUBSUB_EVENT_TYPE,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-time": moment,
    }
    body = {
        "message": {"data": base64.b64encode(data).decode("ascii"), "messageId": message_id, "publishTime": moment},
        "subscription": f"projects/{project}/subscriptions/{subscription}",
    }
    return headers, json.dumps(body).encode()

"""Decoding Eventarc's binary-mode protobuf CloudEvents, parsed by the same CloudEvents SDK
functions-framework uses."""

from datetime import datetime, timezone

import pytest
from cloudevents.http import from_http
from google.cloud.firestore_v1.types import document as firestore_document
from google.protobuf import timestamp_pb2

from local.eventarc import binary_event
from mailer.events import EventError, decode_event

NAME = "projects/demo-mailer/databases/(default)/documents/mail/abc"
CREATED = "google.cloud.firestore.document.v1.created"


def document_bytes(fields: dict, micros: int = 1_700_000_000_123_456, nanos_extra: int = 789) -> bytes:
    """A google.firestore.v1.Document, as Firestore (and our emulator) serializes it."""
    doc = firestore_document.Document.pb()()
    doc.name = NAME
    for key, value in fields.items():
        doc.fields[key].CopyFrom(value)
    stamp = timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000 + nanos_extra)
    doc.create_time.CopyFrom(stamp)
    doc.update_time.CopyFrom(stamp)
    return doc.SerializeToString()


def value(**kwargs):
    return firestore_document.Value.pb()(**kwargs)


def parse(event_type, old, new, **overrides):
    headers, body = binary_event(event_type, project="demo-mailer", database="(default)", path="mail/abc", old=old, new=new)
    headers.update(overrides)
    return decode_event(from_http(headers, body))


def test_created_event_carries_fields_and_exact_update_time():
    fields = {
        "to": value(string_value="ada@example.com"),
        "count": value(integer_value=3),
        "flag": value(boolean_value=True),
        "nested": value(map_value=firestore_document.MapValue.pb()(fields={"list": value(array_value=firestore_document.ArrayValue.pb()(values=[value(double_value=1.5), value(null_value=0)]))})),
        "blob": value(bytes_value=b"\x00\x01"),
    }
    event = parse(CREATED, None, document_bytes(fields))
    assert event.kind == "created"
    assert (event.project, event.database, event.path) == ("demo-mailer", "(default)", "mail/abc")
    assert event.old_value is None  # an empty message on the wire, not a missing one
    assert event.value.fields == {"to": "ada@example.com", "count": 3, "flag": True, "nested": {"list": [1.5, None]}, "blob": b"\x00\x01"}
    # Nanoseconds survive: the claim's precondition must match Firestore's stamp exactly.
    assert event.value.update_time.nanosecond == 123_456_789
    assert event.value.update_time.timestamp() == pytest.approx(1_700_000_000.123456, abs=1e-6)


def test_update_and_delete_events():
    old = document_bytes({"to": value(string_value="a@example.com")})
    new = document_bytes({"to": value(string_value="b@example.com")})
    updated = parse("google.cloud.firestore.document.v1.updated", old, new)
    assert updated.kind == "updated" and updated.old_value.fields == {"to": "a@example.com"}
    deleted = parse("google.cloud.firestore.document.v1.deleted", old, None)
    assert deleted.value is None and deleted.path == "mail/abc"
    written = parse("google.cloud.firestore.document.v1.written.withAuthContext", old, new)
    assert written.kind == "written"


def test_timestamps_decode_to_aware_datetimes():
    stamp = timestamp_pb2.Timestamp(seconds=1_800_000_000)
    event = parse(CREATED, None, document_bytes({"sendAt": value(timestamp_value=stamp)}))
    assert event.value.fields["sendAt"] == datetime.fromtimestamp(1_800_000_000, timezone.utc)


@pytest.mark.parametrize(
    ("overrides", "body", "message"),
    [
        ({"ce-type": "google.cloud.pubsub.topic.v1.messagePublished"}, None, "unsupported event type"),
        ({"content-type": "application/json"}, b'{"value": {}}', "expected protobuf bytes"),
        ({}, b"\xff\xff\xff", "not a DocumentEventData"),
        ({}, b"", "no valid document name"),
    ],
)
def test_unreadable_events_are_refused_with_a_reason(overrides, body, message):
    headers, good_body = binary_event(CREATED, project="p", database="(default)", path="mail/abc", old=None,
                                      new=document_bytes({}))
    headers.update(overrides)
    with pytest.raises(EventError, match=message):
        decode_event(from_http(headers, good_body if body is None else body))

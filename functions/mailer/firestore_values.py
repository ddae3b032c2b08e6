"""Firestore protobuf values (as carried by Eventarc's DocumentEventData) to plain Python values.

Works on the raw protobuf messages (`Document.pb(doc).fields`): one code path, no proto-plus wrapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds


def decode_value(pb: Any) -> Any:
    kind = pb.WhichOneof("value_type")
    if kind is None or kind == "null_value":
        return None
    if kind == "timestamp_value":
        return DatetimeWithNanoseconds.from_timestamp_pb(pb.timestamp_value)
    if kind == "geo_point_value":
        return {"latitude": pb.geo_point_value.latitude, "longitude": pb.geo_point_value.longitude}
    if kind == "array_value":
        return [decode_value(item) for item in pb.array_value.values]
    if kind == "map_value":
        return decode_fields(pb.map_value.fields)
    # boolean, integer, double, string, bytes and reference (a document name) map directly.
    return getattr(pb, kind)


def decode_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A Document's or MapValue's protobuf `fields` map as a dict."""
    return {key: decode_value(value) for key, value in fields.items()}

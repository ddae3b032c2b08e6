"""`sendAt` as apps write it: a Firestore timestamp, or an ISO 8601 string with an offset."""

from datetime import datetime, timedelta, timezone

import pytest

from mailer.schedule import ScheduleError, send_at


def test_timestamps_and_offset_strings_are_read_as_utc():
    moment = datetime(2026, 12, 24, 8, 0, tzinfo=timezone.utc)
    assert send_at({"sendAt": moment}) == moment
    assert send_at({"sendAt": "2026-12-24T09:00:00+01:00"}) == moment
    assert send_at({"sendAt": "2026-12-24T08:00:00Z"}) == moment
    assert send_at({"sendAt": "2026-12-24T08:00:00.250Z"}) == moment + timedelta(milliseconds=250)
    assert send_at({}) is None and send_at({"sendAt": None}) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [("2026-12-24T09:00:00", "no UTC offset"), ("2026-12-24", "no UTC offset"), ("tomorrow", "not an ISO 8601"),
     ("", "not an ISO 8601"), (1766563200, "got int"), ({"seconds": 1}, "got dict")],
)
def test_unreadable_values_name_the_field(value, says):
    with pytest.raises(ScheduleError) as caught:
        send_at({"sendAt": value})
    assert str(caught.value).startswith("sendAt: ") and says in str(caught.value)

from datetime import timedelta

import pytest

from mailer.settings import DEFAULT_MAX_MESSAGE_BYTES, SettingsError, load_settings


def test_defaults_follow_the_extension():
    settings = load_settings({"SMTP_CONNECTION_URI": "smtps://u@smtp.example.com:465"})
    assert settings.mail_collection == "mail"
    assert settings.database == "(default)"
    assert settings.ttl is None
    assert settings.users_collection is None and settings.templates_collection is None
    assert settings.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [("hour", "2", timedelta(hours=2)), ("day", "1", timedelta(days=1)), ("week", "3", timedelta(weeks=3)),
     ("month", "1", timedelta(days=30)), ("year", "2", timedelta(days=730)), ("never", "5", None)],
)
def test_ttl(kind, value, expected):
    assert load_settings({"TTL_EXPIRE_TYPE": kind, "TTL_EXPIRE_VALUE": value}).ttl == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [({"TTL_EXPIRE_TYPE": "fortnight"}, "TTL_EXPIRE_TYPE"),
     ({"TTL_EXPIRE_TYPE": "day", "TTL_EXPIRE_VALUE": "0"}, "TTL_EXPIRE_VALUE"),
     ({"TTL_EXPIRE_TYPE": "day", "TTL_EXPIRE_VALUE": "soon"}, "TTL_EXPIRE_VALUE"),
     ({"MAX_MESSAGE_BYTES": "-1"}, "MAX_MESSAGE_BYTES"),
     ({"LEASE_SECONDS": "x"}, "LEASE_SECONDS")],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(named + ":")


def test_password_is_not_in_repr():
    settings = load_settings({"SMTP_PASSWORD": "hunter2-secret"})
    assert settings.smtp_password == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)

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


def test_retry_defaults_are_the_documented_ones():
    settings = load_settings({})
    assert settings.max_attempts == 5
    assert settings.retry_backoff == timedelta(seconds=60)
    assert settings.retry_backoff_max == timedelta(seconds=3600)
    assert settings.delivery_guarantee == "at-least-once" and not settings.at_most_once
    assert settings.sweep_workers == 4


def test_retry_settings_are_read():
    settings = load_settings({"MAX_ATTEMPTS": "3", "RETRY_BACKOFF_SECONDS": "2", "RETRY_BACKOFF_MAX_SECONDS": "10",
                              "DELIVERY_GUARANTEE": "at-most-once", "SWEEP_BUDGET_SECONDS": "50", "SWEEP_WORKERS": "8"})
    assert settings.max_attempts == 3
    assert (settings.retry_backoff, settings.retry_backoff_max) == (timedelta(seconds=2), timedelta(seconds=10))
    assert settings.at_most_once
    assert settings.sweep_budget == timedelta(seconds=50) and settings.sweep_workers == 8


@pytest.mark.parametrize(
    ("env", "named"),
    [({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS"),
     ({"MAX_ATTEMPTS": "101"}, "MAX_ATTEMPTS"),
     ({"RETRY_BACKOFF_SECONDS": "soon"}, "RETRY_BACKOFF_SECONDS"),
     ({"RETRY_BACKOFF_SECONDS": "60", "RETRY_BACKOFF_MAX_SECONDS": "30"}, "RETRY_BACKOFF_MAX_SECONDS"),
     ({"DELIVERY_GUARANTEE": "exactly-once"}, "DELIVERY_GUARANTEE"),
     ({"SWEEP_WORKERS": "0"}, "SWEEP_WORKERS")],
)
def test_bad_retry_values_name_the_variable(env, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(named + ":")

"""SMTP_CONNECTION_URI parsing: every rule and option, and that the password never shows."""

from __future__ import annotations

import pytest

from mailer.transport import SmtpConfigError, SmtpSettings, parse_smtp_uri
from mailer.smtp_uri import KNOWN_OPTIONS

SECRET = "Pw-7f3a!Zq"


def config_error(uri: str, password: str | None = None) -> str:
    with pytest.raises(SmtpConfigError) as caught:
        parse_smtp_uri(uri, password)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_smtp_scheme_defaults_to_starttls_port_587() -> None:
    settings = parse_smtp_uri("smtp://mail.example.com")
    assert (settings.scheme, settings.host, settings.port) == ("smtp", "mail.example.com", 587)
    assert not settings.implicit_tls
    assert settings.username is None and settings.password is None


def test_smtps_scheme_is_implicit_tls_on_port_465() -> None:
    settings = parse_smtp_uri("SMTPS://mail.example.com")
    assert (settings.scheme, settings.port, settings.implicit_tls) == ("smtps", 465, True)


def test_explicit_port_user_and_password() -> None:
    settings = parse_smtp_uri("smtp://alice:secret@mail.example.com:2525")
    assert (settings.username, settings.password, settings.port) == ("alice", "secret", 2525)


def test_user_and_password_are_percent_decoded() -> None:
    settings = parse_smtp_uri("smtp://me%40example.com:p%40ss%3Aw%2Fo%3Frd%23%25@mail.example.com")
    assert settings.username == "me@example.com"
    assert settings.password == "p@ss:w/o?rd#%"


def test_password_override_wins_over_uri_password() -> None:
    settings = parse_smtp_uri("smtp://alice:inuri@mail.example.com", "fromsecret")
    assert settings.password == "fromsecret"
    assert parse_smtp_uri("smtp://alice@mail.example.com", "fromsecret").password == "fromsecret"


def test_empty_password_override_means_no_override() -> None:
    assert parse_smtp_uri("smtp://alice:inuri@mail.example.com", "").password == "inuri"


def test_ipv6_literal_in_brackets() -> None:
    settings = parse_smtp_uri("smtp://[::1]:2525")
    assert (settings.host, settings.port, settings.address) == ("::1", 2525, "[::1]:2525")
    assert parse_smtp_uri("smtps://u@[2001:db8::5]").host == "2001:db8::5"


@pytest.mark.parametrize("uri, fragment", [
    ("http://mail.example.com", "scheme must be smtp://"),
    ("mail.example.com:25", "scheme must be smtp://"),
    ("", "is empty"),
    ("smtp://", "missing host"),
    ("smtp://user@", "missing host"),
    ("smtp://:25", "missing host"),
    ("smtp://mail.example.com:0", "port must be a number from 1 to 65535"),
    ("smtp://mail.example.com:70000", "port must be a number from 1 to 65535"),
    ("smtp://mail.example.com:abc", "port must be a number from 1 to 65535"),
    ("smtp://mail.example.com:", "port must be a number from 1 to 65535"),
    ("smtp://::1:25", "IPv6 host must be written in brackets"),
    ("smtp://[::1", "missing its closing ']'"),
    ("smtp://[not-ipv6]:25", "invalid IPv6 address"),
    ("smtp://[::1]x", "unexpected text after the IPv6 address"),
    ("smtp://mail.example.com/inbox", "unexpected path"),
    ("smtp://mail.example.com#frag", "fragment"),
    ("smtp://:pw@mail.example.com", "empty user name"),
    ("smtp://me%0D%0AMAIL%20FROM@mail.example.com", "user name contains a control character"),
    # ^A separates XOAUTH2's fields: `user=me^Aauth=Bearer x^A` would smuggle in a second bearer token
    ("smtp://me%01auth=Bearer%20x@mail.example.com?authMethod=XOAUTH2&oauth2TokenUrl=https://o.example/t&oauth2ClientId=c",
     "user name contains a control character"),
    ("smtp://me%09@mail.example.com", "user name contains a control character"),
    ("smtp://ma il.example.com", "not allowed in a host name"),
])
def test_malformed_uris_are_refused_with_a_specific_message(uri: str, fragment: str) -> None:
    message = config_error(uri)
    assert message.startswith("SMTP_CONNECTION_URI") and fragment in message


def test_config_error_is_a_value_error() -> None:
    assert issubclass(SmtpConfigError, ValueError)


def test_non_string_uri_is_a_config_error_not_a_type_error() -> None:
    with pytest.raises(SmtpConfigError):
        parse_smtp_uri(None)  # type: ignore[arg-type]


def test_password_without_user_is_refused() -> None:
    assert "no user name" in config_error("smtp://mail.example.com", "secret")


def test_all_options_are_parsed() -> None:
    settings = parse_smtp_uri(
        "smtp://u@mail.example.com?name=client.example.org&tlsServername=mx.example.com"
        "&tlsRejectUnauthorized=false&connectionTimeout=1500&greetingTimeout=2500&socketTimeout=3500"
        "&pool=false&maxConnections=3&maxMessages=7&requireTLS=true&allowPlaintextAuth=1"
        "&authMethod=login"
    )
    assert settings.ehlo_name == "client.example.org"
    assert settings.tls_servername == "mx.example.com" and settings.tls_name == "mx.example.com"
    assert settings.tls_reject_unauthorized is False
    assert (settings.connection_timeout, settings.greeting_timeout, settings.socket_timeout) == (1.5, 2.5, 3.5)
    assert settings.pool is False
    assert (settings.max_connections, settings.max_messages) == (3, 7)
    assert settings.require_tls is True and settings.allow_plaintext_auth is True
    assert settings.auth_method == "LOGIN"


def test_defaults_are_documented_values() -> None:
    settings = parse_smtp_uri("smtp://mail.example.com")
    assert settings.tls_reject_unauthorized is True and settings.pool is True
    assert (settings.connection_timeout, settings.greeting_timeout, settings.socket_timeout) == (10, 10, 30)
    assert (settings.max_connections, settings.max_messages) == (5, 100)
    assert settings.tls_name == "mail.example.com"
    assert not settings.require_tls and not settings.ignore_tls and not settings.allow_plaintext_auth


def test_ignore_tls_without_credentials() -> None:
    assert parse_smtp_uri("smtp://relay.internal:25?ignoreTLS=true").ignore_tls is True


def test_tls_ca_file_must_exist(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert parse_smtp_uri(f"smtp://h?tlsCaFile={ca}").tls_ca_file == str(ca)
    assert "tlsCaFile" in config_error(f"smtp://h?tlsCaFile={tmp_path}/missing.pem")


def test_unknown_option_is_named_and_known_options_listed() -> None:
    message = config_error("smtp://mail.example.com?tlsServerName=x")
    assert "unknown option 'tlsServerName'" in message
    assert "did you mean 'tlsServername'" in message
    assert "known options: " + ", ".join(KNOWN_OPTIONS) in message
    assert "unknown option 'secure'" in config_error("smtp://mail.example.com?secure=true")


@pytest.mark.parametrize("query, fragment", [
    ("pool=yes", "option 'pool' must be true or false, got 'yes'"),
    ("requireTLS=", "option 'requireTLS' must be true or false"),
    ("tlsRejectUnauthorized=nope", "option 'tlsRejectUnauthorized' must be true or false"),
    ("maxConnections=0", "option 'maxConnections' must be a positive integer, got '0'"),
    ("maxMessages=-1", "option 'maxMessages' must be a positive integer"),
    ("socketTimeout=1.5", "option 'socketTimeout' must be a positive integer"),
    ("connectionTimeout=ten", "option 'connectionTimeout' must be a positive integer"),
    ("greetingTimeout=", "option 'greetingTimeout' must be a positive integer"),
    ("authMethod=CRAM-MD5", "option 'authMethod' must be one of PLAIN, LOGIN"),
    ("name=bad%0d%0aRSET", "option 'name' must be a host name"),
    ("tlsServername=", "option 'tlsServername' must not be empty"),
    ("pool=true&pool=false", "option 'pool' is given more than once"),
])
def test_bad_option_values_are_refused(query: str, fragment: str) -> None:
    assert fragment in config_error(f"smtp://u@mail.example.com?{query}")


@pytest.mark.parametrize("uri, fragment", [
    ("smtps://mail.example.com?ignoreTLS=true", "contradicts smtps://"),
    ("smtp://mail.example.com?ignoreTLS=true&requireTLS=true", "contradict each other"),
    ("smtp://u@mail.example.com?ignoreTLS=true", "allowPlaintextAuth=true"),
    ("smtp://mail.example.com?authMethod=PLAIN", "no user name"),
])
def test_contradictory_options_are_refused(uri: str, fragment: str) -> None:
    assert fragment in config_error(uri)


def test_ignore_tls_with_credentials_needs_allow_plaintext_auth() -> None:
    settings = parse_smtp_uri("smtp://u:p@h?ignoreTLS=true&allowPlaintextAuth=true")
    assert settings.ignore_tls and settings.allow_plaintext_auth


def test_repr_hides_the_password() -> None:
    settings = parse_smtp_uri(f"smtp://alice:{SECRET}@mail.example.com")
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert "alice" in repr(settings)
    assert SECRET not in repr(parse_smtp_uri("smtp://alice@mail.example.com", SECRET))


@pytest.mark.parametrize("uri", [
    f"smtp://alice:{SECRET}@mail.example.com:notaport",
    f"smtp://alice:{SECRET}@mail.example.com?bogus=1",
    f"smtp://alice:{SECRET}@mail.example.com?pool=maybe",
    f"smtp://alice:{SECRET}@/",
    f"ftp://alice:{SECRET}@mail.example.com",
    # An unencoded '/', '?' or '#' in the password moves the split; no piece may leak.
    "smtp://alice:Pw-7f3a/!Zq@mail.example.com",
    "smtp://alice:Pw-7f3a?!Zq@mail.example.com",
    "smtp://alice:Pw-7f3a#!Zq@mail.example.com",
    "smtp://alice:Pw-7f3a?x=!Zq@mail.example.com",
])
def test_errors_never_contain_the_password_or_a_piece_of_it(uri: str) -> None:
    message = config_error(uri)
    for piece in (SECRET, "Pw-7f3a", "!Zq"):
        assert piece not in message


def test_settings_are_frozen() -> None:
    settings = parse_smtp_uri("smtp://mail.example.com")
    assert isinstance(settings, SmtpSettings)
    with pytest.raises(AttributeError):
        settings.port = 25  # type: ignore[misc]

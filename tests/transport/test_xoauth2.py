"""SASL XOAUTH2 against real peers: aiosmtpd offering AUTH XOAUTH2 only (with the 334 error challenge)
and a local OAuth2 token endpoint that counts grants and can expire, revoke, rotate, fail and hang."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

from mailer.credentials import Credentials, PinnedSecret
from mailer.transport import (
    DeliveryError,
    SmtpConfigError,
    SmtpPool,
    parse_smtp_uri,
    pool_for,
    xoauth2_initial_response,
)
from tests.support.oauth_server import (  # noqa: F401 - fixtures
    TokenEndpoint,
    token_endpoint,
    xoauth2_handler,
    xoauth2_server,
)
from tests.transport.helpers import RECIPIENT, SENDER, make_message

MAILBOX = "sender@example.com"
CLIENT_ID = "client-1234.apps.example"
CLIENT_SECRET = "GOCSPX-client-Secret-7781"


def credentials(refresh_token: str, client_secret: str | None = CLIENT_SECRET) -> Credentials:
    return Credentials(
        oauth2_client_secret=PinnedSecret("SMTP_OAUTH2_CLIENT_SECRET", client_secret) if client_secret else None,
        oauth2_refresh_token=PinnedSecret("SMTP_OAUTH2_REFRESH_TOKEN", refresh_token),
    )


def xoauth2_uri(server, tokens: TokenEndpoint, user: str = MAILBOX, **options) -> str:
    return server.uri(user, authMethod="XOAUTH2", oauth2TokenUrl=tokens.url, oauth2ClientId=CLIENT_ID, **options)


class Setup:
    def __init__(self, tokens: TokenEndpoint, server, refresh_token: str, pools: list[SmtpPool]) -> None:
        self.tokens, self.server, self.refresh_token, self._pools = tokens, server, refresh_token, pools

    def pool(self, user: str = MAILBOX, creds: Credentials | None = None, **options) -> SmtpPool:
        pool = SmtpPool(parse_smtp_uri(xoauth2_uri(self.server, self.tokens, user, **options)),
                        creds or credentials(self.refresh_token))
        self._pools.append(pool)
        return pool

    def secrets(self) -> list[str]:
        return [CLIENT_SECRET, self.refresh_token, *self.tokens.refresh_tokens, *self.tokens.access_tokens]


@pytest.fixture
def setup(token_endpoint, xoauth2_server) -> Iterator[Callable[..., Setup]]:
    pools: list[SmtpPool] = []

    def make(lifetime: float = 3600, **server_args) -> Setup:
        tokens = token_endpoint(lifetime)
        tokens.add_client(CLIENT_ID, CLIENT_SECRET)
        refresh = tokens.add_refresh_token(MAILBOX)
        return Setup(tokens, xoauth2_server(tokens, **server_args), refresh, pools)

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()


def send(pool: SmtpPool, subject: str = "Hello"):
    return pool.send(SENDER, [RECIPIENT], make_message(subject))


def assert_hidden(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- the URI options ------------------------------------------------------------------------------

BASE = "smtp://me%40example.com@smtp.example.com:587?authMethod=XOAUTH2"
GOOD = BASE + "&oauth2TokenUrl=https://oauth2.example.com/token&oauth2ClientId=abc"


def test_uri_takes_the_xoauth2_options() -> None:
    settings = parse_smtp_uri(GOOD)
    assert (settings.auth_method, settings.username) == ("XOAUTH2", "me@example.com")
    assert settings.oauth2_token_url == "https://oauth2.example.com/token"
    assert settings.oauth2_client_id == "abc"
    # http:// is fine for a loopback host (the local stack, tests)
    local = parse_smtp_uri(BASE + "&oauth2TokenUrl=http://127.0.0.1:8080/token&oauth2ClientId=abc")
    assert local.oauth2_token_url == "http://127.0.0.1:8080/token"
    assert parse_smtp_uri(BASE.replace("XOAUTH2", "xoauth2") + "&oauth2TokenUrl=http://localhost/t&oauth2ClientId=a").auth_method == "XOAUTH2"


@pytest.mark.parametrize("uri, named", [
    (BASE + "&oauth2ClientId=abc", "'oauth2TokenUrl'"),
    (BASE + "&oauth2TokenUrl=https://oauth2.example.com/token", "'oauth2ClientId'"),
    (BASE + "&oauth2TokenUrl=http://oauth2.example.com/token&oauth2ClientId=abc", "'oauth2TokenUrl' must use https://"),
    (BASE + "&oauth2TokenUrl=ftp://oauth2.example.com/token&oauth2ClientId=abc", "'oauth2TokenUrl'"),
    (BASE + "&oauth2TokenUrl=oauth2.example.com&oauth2ClientId=abc", "'oauth2TokenUrl'"),
    ("smtp://me@smtp.example.com?oauth2TokenUrl=https://o.example.com/t", "'oauth2TokenUrl' needs authMethod=XOAUTH2"),
    ("smtp://me@smtp.example.com?oauth2ClientId=abc", "'oauth2ClientId' needs authMethod=XOAUTH2"),
    ("smtp://smtp.example.com?authMethod=XOAUTH2&oauth2TokenUrl=https://o.example.com/t&oauth2ClientId=a", "no user name"),
])
def test_uri_errors_name_the_option(uri: str, named: str) -> None:
    with pytest.raises(SmtpConfigError) as caught:
        parse_smtp_uri(uri)
    assert named in str(caught.value)


def test_xoauth2_takes_no_password_and_needs_a_refresh_token() -> None:
    with pytest.raises(SmtpConfigError, match="takes no password"):
        parse_smtp_uri(GOOD.replace("me%40example.com@", "me%40example.com:Hunter2-pw@"))
    with pytest.raises(SmtpConfigError) as caught:
        parse_smtp_uri(GOOD, "Hunter2-pw")
    assert "SMTP_PASSWORD" in str(caught.value) and "Hunter2-pw" not in str(caught.value)
    with pytest.raises(SmtpConfigError, match="SMTP_OAUTH2_REFRESH_TOKEN"):
        SmtpPool(parse_smtp_uri(GOOD))


def test_oauth2_secrets_without_xoauth2_are_refused_naming_the_variable() -> None:
    """Not ignored (AUTH would then go out with an empty password and fail as a mere 535)."""
    with pytest.raises(SmtpConfigError) as caught:
        SmtpPool(parse_smtp_uri("smtp://me%40example.com@smtp.example.com:587"), credentials("1//refresh-Token-9"))
    message = str(caught.value)
    assert "SMTP_OAUTH2_REFRESH_TOKEN is set but the URI does not use authMethod=XOAUTH2" in message
    assert "1//refresh-Token-9" not in message and CLIENT_SECRET not in message
    only_client_secret = Credentials(oauth2_client_secret=PinnedSecret("SMTP_OAUTH2_CLIENT_SECRET", CLIENT_SECRET))
    with pytest.raises(SmtpConfigError, match="SMTP_OAUTH2_CLIENT_SECRET is set"):
        SmtpPool(parse_smtp_uri("smtp://me%40example.com@smtp.example.com:587"), only_client_secret)


# -- tokens: one refresh per lifetime ---------------------------------------------------------------

def test_sends_with_xoauth2_and_refreshes_once_per_token_lifetime(setup) -> None:
    s = setup()
    pool = s.pool(pool=False)  # a new connection (and AUTH) for every message
    for number in range(4):
        send(pool, f"message {number}")
    assert len(s.server.messages) == 4
    assert [m.authenticated_as for m in s.server.messages] == [MAILBOX] * 4
    assert s.server.connections == 4 and len(s.server.auth_attempts) == 4
    assert s.tokens.grants == 1 and s.tokens.requests == 1  # not one per email
    form = s.tokens.forms[0]
    assert form == {"grant_type": "refresh_token", "refresh_token": s.refresh_token,
                    "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


def test_concurrent_sends_share_one_refresh(setup) -> None:
    s = setup()
    s.tokens.hang_seconds = 0.5  # a slow endpoint: every sender arrives while the refresh is under way
    pool = s.pool(pool=False, maxConnections=6)
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            send(pool, f"concurrent {number}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(s.server.messages) == 6
    assert s.tokens.requests == 1 and s.tokens.grants == 1


def test_an_expiring_token_is_refreshed_before_it_expires(setup) -> None:
    s = setup(lifetime=2)
    pool = s.pool(pool=False)
    send(pool, "first")
    send(pool, "second, same token")
    assert s.tokens.grants == 1
    time.sleep(2.0)  # past the token's life (refreshed a tenth of it early)
    send(pool, "third, new token")
    assert s.tokens.grants == 2 and len(s.server.messages) == 3
    assert all(attempt.success for attempt in s.server.auth_attempts)


def test_a_missing_expires_in_is_treated_as_a_short_life(setup) -> None:
    s = setup()
    s.tokens.omit_expires_in = True
    pool = s.pool(pool=False)
    send(pool)
    send(pool)
    assert s.tokens.grants == 1


# -- a refused token --------------------------------------------------------------------------------

def test_a_refused_token_is_refreshed_once_and_tried_again(setup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = setup()
    pool = s.pool(pool=False)
    send(pool, "first")
    s.tokens.expire_access_tokens()  # the server no longer takes the cached token (revoked early)
    result = send(pool, "second")
    assert result.accepted == [RECIPIENT]
    attempts = s.server.auth_attempts
    assert [a.success for a in attempts] == [True, False, True]
    assert s.server.connections == 2  # the retry used the same connection
    assert xoauth2_handler(s.server).challenges == 1
    assert s.tokens.grants == 2
    assert_hidden([caplog.text], s.secrets())


def test_a_token_refused_again_after_the_refresh_is_a_permanent_error(setup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = setup()
    pool = s.pool(user="someone-else@example.com")  # not the mailbox the refresh token was issued for
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    error = caught.value
    assert error.transient is False and error.code == 535
    assert "refused XOAUTH2 with a freshly refreshed access token" in error.message
    assert "mailbox" in error.message and "status 401" in error.message
    assert s.tokens.grants == 2  # refreshed once, not in a loop
    assert len(s.server.auth_attempts) == 2 and xoauth2_handler(s.server).challenges == 2
    assert_hidden([error.message, str(error), caplog.text], s.secrets())


def test_a_server_quoting_the_initial_response_back_does_not_show_the_token(setup, caplog) -> None:
    """The base64 `user=..^Aauth=Bearer <token>^A^A` AUTH sent carries the access token as plainly as the
    token itself: masked in the error like it."""
    caplog.set_level(logging.DEBUG)
    s = setup()
    xoauth2_handler(s.server).echo = True
    pool = s.pool(user="someone-else@example.com")
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert "(got ******)" in caught.value.message
    sent = [base64.b64encode(f"user=someone-else@example.com\x01auth=Bearer {token}\x01\x01".encode()).decode()
            for token in s.tokens.access_tokens]
    assert len(sent) == 2
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mailer"))  # (not the server's)
    assert_hidden([caught.value.message, str(caught.value), ours], s.secrets() + sent)


def test_a_temporary_auth_failure_is_transient_and_keeps_the_token(setup) -> None:
    from tests.support.smtp import Behaviour

    s = setup()
    pool = s.pool(pool=False)
    send(pool)
    s.server.behaviour = Behaviour(auth_reply="454 4.7.0 Temporary authentication failure")
    # (auth_reply is played by the PLAIN/LOGIN authenticator only: emulate it on the XOAUTH2 hook)
    handler = xoauth2_handler(s.server)
    original = handler.auth_XOAUTH2

    async def temporary(server, args):
        from aiosmtpd.smtp import AuthResult
        return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")

    handler.auth_XOAUTH2 = temporary  # type: ignore[method-assign]
    s.server._controller.handler = handler
    try:
        with pytest.raises(DeliveryError) as caught:
            send(pool)
    finally:
        handler.auth_XOAUTH2 = original  # type: ignore[method-assign]
    assert caught.value.transient is True and caught.value.code == 454
    assert s.tokens.grants == 1  # a 4xx is not a reason to refresh


# -- Microsoft-size access tokens ----------------------------------------------------------------------

MICROSOFT_TOKEN_BYTES = 2500  # Microsoft's access tokens: ~2,000-2,500 bytes; the AUTH line ~3.4 KB
RFC4954_LINE = 12_288


def large_token_setup(setup, **server_args) -> Setup:
    s = setup(**server_args)
    s.tokens.access_token_bytes = MICROSOFT_TOKEN_BYTES
    return s


def test_a_microsoft_size_token_goes_in_one_auth_line_to_a_server_taking_rfc4954_lines(setup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = large_token_setup(setup, line_limit=RFC4954_LINE, command_limits={"AUTH": RFC4954_LINE})
    result = send(s.pool())
    assert result.accepted == [RECIPIENT] and s.server.messages[0].authenticated_as == MAILBOX
    (issued,) = s.tokens.access_tokens
    assert len(issued) == MICROSOFT_TOKEN_BYTES
    assert xoauth2_handler(s.server).decoded == [issued]  # exactly that token, decoded from one AUTH line
    assert len(s.server.auth_attempts) == 1 and s.tokens.grants == 1
    assert_hidden([caplog.text], s.secrets())


def test_a_server_holding_auth_to_512_octets_gets_the_response_on_a_line_of_its_own(setup) -> None:
    """RFC 4954 4: an AUTH that its initial response makes longer than SMTP's 512 octets goes without it, the
    response following the server's empty challenge; a server that refuses the long line gets that."""
    s = large_token_setup(setup, line_limit=RFC4954_LINE)  # lines up to 12,288, but AUTH held to 512
    pool = s.pool(pool=False)  # a new connection (and AUTH) for every message, the token cached
    send(pool, "first")
    send(pool, "second")
    (issued,) = s.tokens.access_tokens
    assert xoauth2_handler(s.server).decoded == [issued, issued]
    assert [m.authenticated_as for m in s.server.messages] == [MAILBOX, MAILBOX]
    assert s.tokens.grants == 1  # the refused line was not taken for a refused token


def test_a_server_refusing_the_long_auth_line_is_a_clear_permanent_error(setup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = large_token_setup(setup)  # aiosmtpd's defaults: commands up to 512 octets, no line over 1,001
    pool = s.pool()
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    error = caught.value
    assert error.transient is False and error.code == 500  # a configuration problem: not retried
    assert error.message.startswith(f"SMTP server {s.server.address} refused AUTH XOAUTH2 as too long: 500 ")
    (issued,) = s.tokens.access_tokens
    octets = len(f"AUTH XOAUTH2 {xoauth2_initial_response(MAILBOX, issued)}\r\n")
    assert 3_000 < octets < 4_000
    assert error.message.endswith(
        f"; the 2,500-byte access token makes a {octets:,}-octet AUTH line (refused, and again when sent on a line "
        "of its own after a bare AUTH XOAUTH2); RFC 4954 expects servers to take 12,288 octets: raise the server's "
        "line limit for AUTH, or send through the mail provider's own SMTP server")
    assert "mailbox" not in error.message  # not blamed on the user or the token's scope
    assert s.tokens.grants == 1 and not s.server.auth_attempts  # no refresh: the token was never judged
    assert "refreshing" not in caplog.text
    assert_hidden([error.message, str(error), caplog.text], s.secrets())


# -- the token endpoint's failures --------------------------------------------------------------------

def test_a_revoked_refresh_token_is_permanent_and_says_to_renew_it(setup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = setup()
    s.tokens.revoke(s.refresh_token)
    pool = s.pool()
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    error = caught.value
    assert error.transient is False
    assert "invalid_grant" in error.message and "must be renewed" in error.message
    assert "SMTP_OAUTH2_REFRESH_TOKEN" in error.message
    assert "AADSTS70008" in error.message and "Trace ID" not in error.message  # reason kept, trace data not
    assert "\n" not in error.message
    assert s.server.connections == 1 and not s.server.auth_attempts  # nothing sent to the SMTP server
    assert_hidden([error.message, caplog.text], s.secrets())


def test_a_wrong_client_secret_names_the_client_settings(setup) -> None:
    s = setup()
    pool = s.pool(creds=credentials(s.refresh_token, client_secret="not-the-secret-991"))
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert caught.value.transient is False
    assert "invalid_client" in caught.value.message
    assert "'oauth2ClientId'" in caught.value.message and "SMTP_OAUTH2_CLIENT_SECRET" in caught.value.message
    assert "not-the-secret-991" not in caught.value.message


def test_a_hostile_error_code_from_the_token_endpoint_is_quoted_on_one_short_line(setup) -> None:
    """The endpoint's `error` is quoted like its error_description: one line, cut short, without the secrets
    the client sent (an endpoint echoing the form back, or 100 KB of text, must not reach the record)."""
    s = setup()
    s.tokens.fail_status = 400
    s.tokens.fail_payload = {"error": f"bad_request\r\nrefresh_token={s.refresh_token}\r\n" + "x" * 100_000}
    with pytest.raises(DeliveryError) as caught:
        send(s.pool())
    message = caught.value.message
    assert caught.value.transient is False and "refused the refresh grant (bad_request refresh_token=******" in message
    assert "\n" not in message and "\r" not in message and len(message) < 400
    assert_hidden([message], s.secrets())


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failing_token_endpoint_is_transient(setup, status) -> None:
    s = setup()
    s.tokens.fail_status = status
    pool = s.pool()
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert caught.value.transient is True
    assert f"HTTP {status}" in caught.value.message
    s.tokens.fail_status = None  # the endpoint recovers: the next attempt works
    send(pool)
    assert len(s.server.messages) == 1


@pytest.mark.parametrize("slowness", [
    {"hang_seconds": 3},  # no answer at all for a while
    # Each byte well within the socket timeout, so only a deadline on the whole exchange stops it (the
    # answer would otherwise take minutes, holding the token lock and every send on the instance).
    {"trickle_seconds": 0.1},
], ids=["hanging", "trickling"])
def test_a_slow_token_endpoint_is_cut_off_at_the_timeout_as_transient(setup, slowness) -> None:
    s = setup()
    for name, value in slowness.items():
        setattr(s.tokens, name, value)
    pool = s.pool(connectionTimeout=500)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert time.monotonic() - started < 2.0, caught.value.message
    assert caught.value.transient is True and "timed out" in caught.value.message


def test_an_unreachable_token_endpoint_is_transient(setup) -> None:
    s = setup()
    s.tokens.stop()  # nothing listens on its port any more
    pool = s.pool()
    with pytest.raises(DeliveryError) as caught:
        send(pool)
    assert caught.value.transient is True and "unreachable" in caught.value.message


def test_the_token_endpoint_certificate_is_verified(token_endpoint, xoauth2_server, smtp_ca_file) -> None:
    trusted = token_endpoint(tls=True)  # signed by the test CA that tlsCaFile names
    trusted.add_client(CLIENT_ID, CLIENT_SECRET)
    refresh = trusted.add_refresh_token(MAILBOX)
    server = xoauth2_server(trusted)
    pool = SmtpPool(parse_smtp_uri(xoauth2_uri(server, trusted)), credentials(refresh))
    try:
        send(pool)
    finally:
        pool.close()
    assert trusted.grants == 1 and trusted.url.startswith("https://")

    stranger = TokenEndpoint(tls_cert=trustme.CA().issue_cert("localhost")).start()  # an unknown CA
    try:
        stranger.add_client(CLIENT_ID, CLIENT_SECRET)
        refresh = stranger.add_refresh_token(MAILBOX)
        pool = SmtpPool(parse_smtp_uri(xoauth2_uri(server, stranger)), credentials(refresh))
        with pytest.raises(DeliveryError) as caught:
            send(pool)
        pool.close()
    finally:
        stranger.stop()
    assert caught.value.transient is False and "certificate verification failed" in caught.value.message
    assert stranger.grants == 0


# -- rotation ----------------------------------------------------------------------------------------

def test_a_rotated_refresh_token_is_used_from_then_on(setup, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = setup(lifetime=3600)
    s.tokens.rotate = s.tokens.revoke_rotated = True  # the old one stops working at once
    creds = credentials(s.refresh_token)
    pool = s.pool(creds=creds, pool=False)
    send(pool, "first")
    rotated = creds.oauth2_refresh_token.get()
    assert rotated != s.refresh_token and rotated in s.tokens.refresh_tokens
    assert s.refresh_token not in s.tokens.refresh_tokens
    s.tokens.expire_access_tokens()
    send(pool, "second")  # refreshes with the rotated token; the revoked original would fail
    assert s.tokens.forms[1]["refresh_token"] == rotated
    assert s.tokens.grants == 2 and len(s.server.messages) == 2
    assert "kept in this instance's memory only" in caplog.text  # pinned: cannot be stored durably
    assert "destroy" not in caplog.text  # ... and there is no Secret Manager version to destroy
    assert_hidden([caplog.text], s.secrets() + [rotated])


def test_pool_for_keeps_the_token_across_calls(setup) -> None:
    s = setup()
    creds = credentials(s.refresh_token)
    uri = xoauth2_uri(s.server, s.tokens, pool=False)
    for number in range(3):
        send(pool_for(uri, None, creds), f"via pool_for {number}")
    assert s.tokens.grants == 1 and len(s.server.messages) == 3
    pool_for(uri, None, credentials(s.refresh_token, "other-secret")).close()  # another config: new pool


def test_a_rotated_pinned_refresh_token_survives_the_next_invocations_settings(setup) -> None:
    """Each invocation builds its settings (and Credentials) from the same environment: pool_for must
    find the pool whose token source holds the rotated refresh token, not start over with the original
    one (which the endpoint revoked when it rotated it)."""
    s = setup()
    s.tokens.rotate = s.tokens.revoke_rotated = True
    uri = xoauth2_uri(s.server, s.tokens, pool=False)
    pool = pool_for(uri, None, credentials(s.refresh_token))
    for number in range(3):
        assert pool_for(uri, None, credentials(s.refresh_token)) is pool  # as the handler calls it
        send(pool_for(uri, None, credentials(s.refresh_token)), f"invocation {number}")
        s.tokens.expire_access_tokens()
    assert s.tokens.grants == 3 and len(s.server.messages) == 3


def test_a_partial_echo_of_the_long_auth_line_does_not_reach_the_error(setup, monkeypatch) -> None:
    """A server refusing the long AUTH line may quote part of it back ("500 5.5.2 Line too long: AUTH
    XOAUTH2 dXNlcj1..." cut at some length): neither that run of the base64 response nor any long piece of
    the token may reach the document's error, though neither is the whole secret."""
    from mailer import transport

    s = large_token_setup(setup)

    def careless(client, username: str, token: str, refused=None):
        line = f"AUTH XOAUTH2 {xoauth2_initial_response(username, token)}"
        decoded = f"user={username}\x01auth=Bearer {token}"
        return 500, f"5.5.2 Line too long: {line[:400]}... (starts {decoded[:300]!r})".encode(), None

    monkeypatch.setattr(transport, "auth_xoauth2", careless)
    with pytest.raises(DeliveryError) as caught:
        send(s.pool())
    message = caught.value.message
    (issued,) = s.tokens.access_tokens
    for secret in (issued, xoauth2_initial_response(MAILBOX, issued)):
        pieces = {secret[i:i + 16] for i in range(len(secret) - 15)}
        leaked = sum(piece in message for piece in pieces)
        assert leaked == 0  # (a count: a failure shows no piece of the token)
    assert message.startswith(f"SMTP server {s.server.address} refused AUTH XOAUTH2 as too long: 500 5.5.2 Line too long: ")
    assert "******" in message and caught.value.transient is False


def test_a_refused_bare_auth_is_not_reported_as_the_response_line_refused_too(setup, monkeypatch) -> None:
    """The long line is refused (aiosmtpd's 500), then the bare AUTH XOAUTH2 itself (a server wanting the
    initial response on the AUTH line): the response never went on a line of its own, so the error may
    not say it was refused there; it gives both replies."""
    from mailer import transport

    s = large_token_setup(setup)
    docmd = transport._SmtpClient.docmd

    def no_bare_auth(self, cmd: str, args: str = ""):
        if cmd == "AUTH" and args == "XOAUTH2":
            return 501, b"5.5.4 Initial response required"
        return docmd(self, cmd, args)

    monkeypatch.setattr(transport._SmtpClient, "docmd", no_bare_auth)
    with pytest.raises(DeliveryError) as caught:
        send(s.pool())
    error = caught.value
    assert error.transient is False and error.code == 501 and s.tokens.grants == 1  # no refresh
    (issued,) = s.tokens.access_tokens
    octets = len(f"AUTH XOAUTH2 {xoauth2_initial_response(MAILBOX, issued)}\r\n")
    assert error.message.startswith(f"SMTP server {s.server.address} refused AUTH XOAUTH2 as too long: 500 ")
    assert error.message.endswith(
        f"; the 2,500-byte access token makes a {octets:,}-octet AUTH line, and a bare AUTH XOAUTH2 (RFC 4954's "
        "form for it) was refused too: 501 5.5.4 Initial response required; RFC 4954 expects servers to take "
        "12,288 octets: raise the server's line limit for AUTH, or send through the mail provider's own SMTP server")
    assert "on a line of its own" not in error.message

"""`make check` with authMethod=XOAUTH2: the function's own token source against the local OAuth2 token
endpoint, then SASL XOAUTH2 against aiosmtpd offering it (with the 334 error challenge), both from
tests/support/oauth_server.py. No refresh token, client secret or access token is ever printed."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

from ops import check
from tests.support.oauth_server import TokenEndpoint, token_endpoint, xoauth2_server  # noqa: F401 - fixtures
from tests.support.smtp import Behaviour, SmtpTestServer

MAILBOX = "sender@example.com"
CLIENT_ID = "client-check.apps.example"
CLIENT_SECRET = "GOCSPX-check-Client-Secret-5512"


def run(uri: str, *argv: str, refresh_token: str | None, client_secret: str | None = CLIENT_SECRET,
        hidden: tuple[str, ...] = ()) -> tuple[int, str]:
    environ = {}
    if refresh_token is not None:
        environ["SMTP_OAUTH2_REFRESH_TOKEN"] = refresh_token
    if client_secret is not None:
        environ["SMTP_OAUTH2_CLIENT_SECRET"] = client_secret
    out = io.StringIO()
    code = check.main(["--uri", uri, *argv], stdin=io.StringIO(""), stdout=out, environ=environ)
    text = out.getvalue()
    for secret in (CLIENT_SECRET, *(s for s in (refresh_token,) if s), *hidden):
        assert secret not in text and base64.b64encode(secret.encode()).decode() not in text, "a secret was printed"
    return code, text


def setup(token_endpoint: Callable[..., TokenEndpoint], xoauth2_server: Callable[..., SmtpTestServer],
          **server_args: object) -> tuple[TokenEndpoint, SmtpTestServer, str]:
    tokens = token_endpoint()
    tokens.add_client(CLIENT_ID, CLIENT_SECRET)
    refresh = tokens.add_refresh_token(MAILBOX)
    return tokens, xoauth2_server(tokens, **server_args), refresh


def uri(server: SmtpTestServer, tokens: TokenEndpoint) -> str:
    return server.uri(MAILBOX, authMethod="XOAUTH2", oauth2TokenUrl=tokens.url, oauth2ClientId=CLIENT_ID)


def test_xoauth2_token_auth_and_test_message(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    tokens, server, refresh = setup(token_endpoint, xoauth2_server)
    code, text = run(uri(server, tokens), "--send-to", "ada@example.com", "--from", MAILBOX, "--json",
                     refresh_token=refresh)
    document = json.loads(text)
    assert code == 0 and document["ok"], text
    steps = {step["step"]: step for step in document["steps"]}
    assert steps["token"]["status"] == "ok" and steps["token"]["data"]["endpoint"] == tokens.url
    assert steps["AUTH"]["data"] == {"method": "XOAUTH2", "code": 235}
    assert steps["EHLO"]["data"]["capabilities"]["AUTH"] == ["XOAUTH2"]
    assert steps["send"]["status"] == "ok"
    for token in tokens.access_tokens:
        assert token not in text
    assert [(a.mechanism, a.login, a.success) for a in server.auth_attempts] == [("XOAUTH2", MAILBOX, True)] * 2
    [message] = server.messages
    assert message.authenticated_as == MAILBOX


def test_xoauth2_revoked_refresh_token_says_renew(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    tokens, server, refresh = setup(token_endpoint, xoauth2_server)
    tokens.revoke(refresh)
    code, text = run(uri(server, tokens), refresh_token=refresh)
    assert code == 1, text
    assert "FAIL  token" in text and "invalid_grant" in text
    assert "likely cause: the refresh token is revoked or expired" in text
    assert server.auth_attempts == []


def test_xoauth2_refused_token_shows_the_challenge(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    tokens, server, _ = setup(token_endpoint, xoauth2_server)
    elsewhere = token_endpoint()  # a token from another endpoint: the server does not know it
    elsewhere.add_client(CLIENT_ID, CLIENT_SECRET)
    foreign = elsewhere.add_refresh_token(MAILBOX)
    code, text = run(uri(server, elsewhere), refresh_token=foreign, hidden=tuple(elsewhere.access_tokens))
    assert code == 1, text
    assert "FAIL  AUTH" in text and "535 5.7.8" in text and '"scope": "https://mail.google.com/"' in text
    assert f"the URI's user ({MAILBOX}) must be the mailbox" in text
    for token in elsewhere.access_tokens:
        assert token not in text


def test_xoauth2_rotated_refresh_token_is_masked_not_stored(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    tokens, server, refresh = setup(token_endpoint, xoauth2_server)
    tokens.rotate = True
    code, text = run(uri(server, tokens), refresh_token=refresh)
    assert code == 0, text
    assert "warn  token" in text and "does not store it" in text
    for token in tokens.refresh_tokens:
        assert token not in text


def test_xoauth2_without_a_refresh_token_is_skipped(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    tokens, server, _ = setup(token_endpoint, xoauth2_server)
    code, text = run(uri(server, tokens), refresh_token=None)
    assert code == 0, text
    assert "skip  AUTH" in text and "SMTP_OAUTH2_REFRESH_TOKEN" in text and tokens.requests == 0


def test_oauth2_secrets_a_server_echoes_are_masked(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    # A broken server that shows the secrets in its greeting: the output has ****** in their place.
    tokens, _, refresh = setup(token_endpoint, xoauth2_server)
    server = xoauth2_server(tokens, tls="implicit", behaviour=Behaviour(greeting_reply=f"220 {CLIENT_SECRET} {refresh}"))
    code, text = run(uri(server, tokens), refresh_token=refresh)
    assert code == 0 and "ok    greeting" in text and f"220 {check.MASK} {check.MASK}" in text, text


def test_the_token_endpoint_certificate_is_verified_as_the_function_verifies_it(xoauth2_server) -> None:  # noqa: F811
    """tlsRejectUnauthorized=false concerns the SMTP server only: the function still verifies the token
    endpoint (the refresh token and client secret go there), so check must too."""
    import trustme

    stranger = TokenEndpoint(tls_cert=trustme.CA().issue_cert("localhost")).start()  # an unknown CA
    try:
        stranger.add_client(CLIENT_ID, CLIENT_SECRET)
        refresh = stranger.add_refresh_token(MAILBOX)
        server = xoauth2_server(stranger)
        code, text = run(server.uri(MAILBOX, authMethod="XOAUTH2", oauth2TokenUrl=stranger.url, oauth2ClientId=CLIENT_ID,
                                    tlsRejectUnauthorized="false"), refresh_token=refresh)
    finally:
        stranger.stop()
    assert code == 1 and "FAIL  token" in text and "certificate verification failed" in text, text
    assert stranger.grants == 0


def test_the_token_endpoint_gets_the_function_s_timeout(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    """The function waits connectionTimeout for the token endpoint; an endpoint slower than that fails the
    function's sends, so check fails the token step too (rather than waiting socketTimeout)."""
    tokens, server, refresh = setup(token_endpoint, xoauth2_server)
    tokens.hang_seconds = 1.5
    code, text = run(server.uri(MAILBOX, authMethod="XOAUTH2", oauth2TokenUrl=tokens.url, oauth2ClientId=CLIENT_ID,
                                connectionTimeout=700, socketTimeout=5000), refresh_token=refresh)
    assert code == 1 and "FAIL  token" in text and "timed out" in text, text


def test_xoauth2_a_long_auth_line_refused_blames_the_line_not_the_token(token_endpoint, xoauth2_server) -> None:  # noqa: F811
    """A Microsoft-size token (2,500 bytes) against aiosmtpd's default line limits: the long AUTH line is
    refused, then the response on a line of its own. The token was never judged: check must say what the
    function writes (the line is too long), not send the user after the mailbox or the scope."""
    tokens, server, refresh = setup(token_endpoint, xoauth2_server)
    tokens.access_token_bytes = 2500
    code, text = run(uri(server, tokens), refresh_token=refresh, hidden=())
    assert code == 1, text
    assert "FAIL  AUTH" in text and "the line, not the token" in text and "refused AUTH XOAUTH2 as too long" in text
    assert "2,500-byte access token" in text and "must be the mailbox" not in text
    for token in tokens.access_tokens:
        assert token not in text


def test_xoauth2_a_partial_echo_of_the_auth_line_is_masked(token_endpoint, xoauth2_server, monkeypatch) -> None:  # noqa: F811
    """A server refusing the long line may quote part of it back, cut at its own length, or the decoded
    response: no long piece of the token (or of its base64 form) may be printed, though neither is whole."""
    tokens, server, refresh = setup(token_endpoint, xoauth2_server)
    tokens.access_token_bytes = 2500

    def careless(client, username: str, token: str, refused=None):
        line = f"AUTH XOAUTH2 {check.xoauth2_initial_response(username, token)}"
        decoded = f"user={username}\x01auth=Bearer {token}"
        if refused is not None:
            refused.append((500, b"5.5.2 Line too long"))
        return 500, f"5.5.2 Line too long: {line[:400]}... (starts {decoded[:300]!r})".encode(), None

    monkeypatch.setattr(check, "auth_xoauth2", careless)
    code, text = run(uri(server, tokens), refresh_token=refresh)
    assert code == 1 and "FAIL  AUTH" in text and check.MASK in text, text
    (issued,) = tokens.access_tokens
    for secret in (issued, check.xoauth2_initial_response(MAILBOX, issued)):
        pieces = {secret[i:i + 16] for i in range(len(secret) - 15)}
        assert sum(piece in text for piece in pieces) == 0  # (a count: a failure prints no piece of the token)

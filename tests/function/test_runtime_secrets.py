"""Secrets at run time and XOAUTH2 through the deployed function (issue 11): documents in the Firestore
emulator, the function behind functions-framework, a real SMTP server, a local Secret Manager spoken to
by the real client library (SECRET_MANAGER_ENDPOINT) and a local OAuth2 token endpoint."""

from __future__ import annotations

import logging

import grpc
import pytest

from mailer.settings import SettingsError, load_settings
from tests.support.oauth_server import token_endpoint, xoauth2_server  # noqa: F401 - fixtures
from tests.support.secretmanager import secret_manager  # noqa: F401 - fixture

HELLO = {"to": "ada@example.com", "message": {"subject": "Hi", "text": "body"}}
USER = "mailer"
PASSWORD_SECRET = "projects/demo-test/secrets/smtp-password"
REFRESH_SECRET = "projects/demo-test/secrets/smtp-oauth2-refresh-token"
CLIENT_SECRET_SECRET = "projects/demo-test/secrets/smtp-oauth2-client-secret"
FIRST, SECOND = "first-Pa55-Walrus", "second-Pa55-Narwhal"
MAILBOX = "sender@example.com"
CLIENT_ID = "client-77.apps.example"
CLIENT_SECRET = "GOCSPX-runtime-Client-Secret"
OUR_VARIABLES = ("SMTP_PASSWORD_SECRET", "SMTP_OAUTH2_CLIENT_SECRET", "SMTP_OAUTH2_REFRESH_TOKEN",
                 "SMTP_OAUTH2_CLIENT_SECRET_SECRET", "SMTP_OAUTH2_REFRESH_TOKEN_SECRET", "SECRET_MANAGER_ENDPOINT")


@pytest.fixture
def line(pipeline, secret_manager, monkeypatch, caplog):
    for name in OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.DEBUG)
    pipeline.configure(SECRET_MANAGER_ENDPOINT=secret_manager.endpoint)
    return pipeline


def assert_hidden(secrets, *texts) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in str(text), "a secret leaked"


# -- the password, read at run time -------------------------------------------------------------------

def test_a_rotated_password_takes_effect_without_a_redeploy(line, secret_manager, smtp_server, caplog):
    server = smtp_server(users={USER: FIRST})
    secret_manager.set(PASSWORD_SECRET, FIRST + "\n")  # (as `echo ... | gcloud secrets versions add` stores it)
    line.configure(SMTP_CONNECTION_URI=server.uri(USER, pool=False), SMTP_PASSWORD_SECRET=PASSWORD_SECRET)
    line.start_bridge()

    deliveries = [line.send("before-1", HELLO), line.send("before-2", HELLO)]
    assert [d["state"] for d in deliveries] == ["SUCCESS", "SUCCESS"]
    assert secret_manager.accesses[PASSWORD_SECRET] == 1  # cached: not read per email

    # Rotation: the server takes the new password only, Secret Manager gets a new version.
    server.users[USER] = SECOND
    secret_manager.set(PASSWORD_SECRET, SECOND)
    deliveries.append(line.send("after", HELLO))
    assert deliveries[-1]["state"] == "SUCCESS", deliveries[-1]
    assert deliveries[-1]["attempts"] == 1  # the same attempt authenticated again, no retry needed
    assert [a.success for a in server.auth_attempts] == [True, True, False, True]
    assert secret_manager.accesses[PASSWORD_SECRET] == 2  # re-read once, on the 535
    assert len(server.messages) == 3
    assert_hidden([FIRST, SECOND], caplog.text, *deliveries)


def test_a_refused_password_that_did_not_change_is_an_error_after_one_reread(line, secret_manager, smtp_server, caplog):
    server = smtp_server(users={USER: "what-the-server-wants"})
    secret_manager.set(PASSWORD_SECRET, FIRST)
    line.configure(SMTP_CONNECTION_URI=server.uri(USER), SMTP_PASSWORD_SECRET=PASSWORD_SECRET)
    line.start_bridge()
    delivery = line.send("wrong", HELLO)
    assert delivery["state"] == "ERROR" and "535" in delivery["error"]
    assert "SMTP_PASSWORD_SECRET was read again" in delivery["error"]
    assert secret_manager.accesses[PASSWORD_SECRET] == 2  # read, then re-read once: no loop
    assert len(server.auth_attempts) == 1  # same value: not sent twice
    assert_hidden([FIRST], caplog.text, delivery)


def test_a_missing_secret_is_an_error_naming_the_variable(line, secret_manager, smtp_server):
    server = smtp_server(users={USER: FIRST})
    line.configure(SMTP_CONNECTION_URI=server.uri(USER), SMTP_PASSWORD_SECRET=PASSWORD_SECRET)
    line.start_bridge()
    delivery = line.send("missing", HELLO)
    assert delivery["state"] == "ERROR"
    assert delivery["error"].startswith("SMTP_PASSWORD_SECRET: cannot read Secret Manager secret")
    assert "NOT_FOUND" in delivery["error"] and "\n" not in delivery["error"]


def test_secret_manager_unavailable_is_retried(line, secret_manager, smtp_server):
    server = smtp_server(users={USER: FIRST})
    secret_manager.set(PASSWORD_SECRET, FIRST)
    secret_manager.fail_with = grpc.StatusCode.UNAVAILABLE
    line.configure(SMTP_CONNECTION_URI=server.uri(USER), SMTP_PASSWORD_SECRET=PASSWORD_SECRET)
    line.start_bridge()
    delivery = line.send("unavailable", HELLO)
    assert delivery["state"] == "RETRY", delivery
    assert "SMTP_PASSWORD_SECRET: Secret Manager is unavailable" in delivery["error"]


def test_pinned_and_runtime_password_together_are_refused(line, secret_manager, smtp_server):
    server = smtp_server(users={USER: FIRST})
    line.configure(SMTP_CONNECTION_URI=server.uri(USER), SMTP_PASSWORD=FIRST, SMTP_PASSWORD_SECRET=PASSWORD_SECRET)
    line.start_bridge()
    delivery = line.send("both", HELLO)
    assert delivery["state"] == "ERROR"
    assert "SMTP_PASSWORD and SMTP_PASSWORD_SECRET are both set" in delivery["error"]
    assert FIRST not in str(delivery)


@pytest.mark.parametrize("env, named", [
    ({"SMTP_PASSWORD_SECRET": "smtp-password"}, "SMTP_PASSWORD_SECRET: expected projects/<project>/secrets/<id>"),
    ({"SMTP_OAUTH2_REFRESH_TOKEN": "x", "SMTP_OAUTH2_REFRESH_TOKEN_SECRET": REFRESH_SECRET},
     "SMTP_OAUTH2_REFRESH_TOKEN and SMTP_OAUTH2_REFRESH_TOKEN_SECRET are both set"),
    ({"SECRET_MANAGER_ENDPOINT": "secretmanager.googleapis.com:443"}, "SECRET_MANAGER_ENDPOINT: must be a loopback"),
])
def test_settings_errors_name_the_variables(env, named):
    with pytest.raises(SettingsError) as caught:
        load_settings({"SMTP_CONNECTION_URI": "smtp://u@h", **env})
    assert named in str(caught.value)


def test_the_pinned_password_stays_the_default_path():
    settings = load_settings({"SMTP_CONNECTION_URI": "smtp://u@h", "SMTP_PASSWORD": " pw "})
    assert settings.smtp_secrets is None and settings.smtp_password == " pw "
    assert "pw" not in repr(settings)
    with_secret = load_settings({"SMTP_PASSWORD_SECRET": PASSWORD_SECRET + "/versions/latest"})
    assert with_secret.smtp_secrets.password.resource == PASSWORD_SECRET
    oauth = load_settings({"SMTP_OAUTH2_CLIENT_SECRET": CLIENT_SECRET, "SMTP_OAUTH2_REFRESH_TOKEN": "1//rt-Secret-42"})
    for text in (repr(oauth), str(oauth.smtp_secrets)):
        assert CLIENT_SECRET not in text and "1//rt-Secret-42" not in text
        assert "SMTP_OAUTH2_REFRESH_TOKEN" in text  # the variable is named, not its value


# -- XOAUTH2 through the function ---------------------------------------------------------------------

@pytest.fixture
def oauth(line, token_endpoint, xoauth2_server):
    tokens = token_endpoint(lifetime=3600)
    tokens.add_client(CLIENT_ID, CLIENT_SECRET)
    refresh = tokens.add_refresh_token(MAILBOX)
    server = xoauth2_server(tokens)
    uri = server.uri(MAILBOX, authMethod="XOAUTH2", oauth2TokenUrl=tokens.url, oauth2ClientId=CLIENT_ID, pool=False)
    line.configure(SMTP_CONNECTION_URI=uri)
    return tokens, server, refresh


def test_xoauth2_with_pinned_secrets_refreshes_once_for_many_emails(line, oauth, caplog):
    tokens, server, refresh = oauth
    line.configure(SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET, SMTP_OAUTH2_REFRESH_TOKEN=refresh)
    line.start_bridge()
    deliveries = [line.send(f"xo-{n}", HELLO) for n in range(3)]
    assert [d["state"] for d in deliveries] == ["SUCCESS"] * 3
    assert [m.authenticated_as for m in server.messages] == [MAILBOX] * 3
    assert tokens.requests == 1  # one refresh per token lifetime, not per email
    assert_hidden([CLIENT_SECRET, refresh, *tokens.access_tokens], caplog.text, *deliveries)


def test_a_revoked_refresh_token_puts_the_document_in_error(line, oauth, caplog):
    tokens, server, refresh = oauth
    line.configure(SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET, SMTP_OAUTH2_REFRESH_TOKEN=refresh)
    tokens.revoke(refresh)
    line.start_bridge()
    delivery = line.send("revoked", HELLO)
    assert delivery["state"] == "ERROR", delivery
    assert "SMTP_OAUTH2_REFRESH_TOKEN" in delivery["error"] and "must be renewed" in delivery["error"]
    assert not server.messages
    assert_hidden([CLIENT_SECRET, refresh], caplog.text, delivery)


def test_a_failing_token_endpoint_is_retried(line, oauth):
    tokens, server, refresh = oauth
    line.configure(SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET, SMTP_OAUTH2_REFRESH_TOKEN=refresh)
    tokens.fail_status = 503
    line.start_bridge()
    delivery = line.send("endpoint-down", HELLO)
    assert delivery["state"] == "RETRY", delivery
    assert "HTTP 503" in delivery["error"] and delivery["nextAttemptTime"] is not None


def test_a_rotated_refresh_token_becomes_a_new_secret_version(line, oauth, secret_manager, caplog):
    tokens, server, refresh = oauth
    secret_manager.set(REFRESH_SECRET, refresh)
    secret_manager.set(CLIENT_SECRET_SECRET, CLIENT_SECRET)
    line.configure(SMTP_OAUTH2_REFRESH_TOKEN_SECRET=REFRESH_SECRET, SMTP_OAUTH2_CLIENT_SECRET_SECRET=CLIENT_SECRET_SECRET)
    tokens.rotate = tokens.revoke_rotated = True  # Microsoft-like: each grant returns a new refresh token
    line.start_bridge()

    first = line.send("rotate-1", HELLO)
    assert first["state"] == "SUCCESS", first
    assert secret_manager.versions(REFRESH_SECRET) == 2 and secret_manager.active(REFRESH_SECRET) == 1
    rotated = secret_manager.latest(REFRESH_SECRET)
    assert rotated != refresh and rotated in tokens.refresh_tokens

    tokens.expire_access_tokens()  # the next email needs a new access token: from the rotated refresh token
    second = line.send("rotate-2", HELLO)
    assert second["state"] == "SUCCESS", second
    assert tokens.forms[-1]["refresh_token"] == rotated
    assert secret_manager.versions(REFRESH_SECRET) == 3 and secret_manager.active(REFRESH_SECRET) == 1
    assert secret_manager.accesses[REFRESH_SECRET] == 1  # read once; afterwards the stored value is used
    assert_hidden([CLIENT_SECRET, refresh, rotated, secret_manager.latest(REFRESH_SECRET)],
                  caplog.text, first, second)


def test_a_refresh_token_renewed_in_secret_manager_is_picked_up(line, oauth, secret_manager):
    """The operator renews a revoked refresh token in Secret Manager: the next email reads it again
    (invalid_grant re-reads the secret once) instead of failing until a redeploy."""
    tokens, server, refresh = oauth
    secret_manager.set(REFRESH_SECRET, refresh)
    line.configure(SMTP_OAUTH2_REFRESH_TOKEN_SECRET=REFRESH_SECRET, SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET)
    line.start_bridge()
    assert line.send("renew-1", HELLO)["state"] == "SUCCESS"
    tokens.revoke(refresh)
    tokens.expire_access_tokens()
    secret_manager.set(REFRESH_SECRET, tokens.add_refresh_token(MAILBOX))  # the operator's new token
    delivery = line.send("renew-2", HELLO)
    assert delivery["state"] == "SUCCESS", delivery
    assert secret_manager.accesses[REFRESH_SECRET] == 2


def test_a_rotation_secret_manager_refuses_to_store_is_still_used_and_logged(line, oauth, secret_manager, caplog):
    """The runtime account lacks secretVersionManager (or Secret Manager refuses): the email still goes,
    the instance keeps the rotated token in memory, the log says it could not be stored, and the version
    it read is not destroyed (nothing replaced it)."""
    tokens, server, refresh = oauth
    secret_manager.set(REFRESH_SECRET, refresh)
    secret_manager.deny_add = True
    line.configure(SMTP_OAUTH2_REFRESH_TOKEN_SECRET=REFRESH_SECRET, SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET)
    tokens.rotate = tokens.revoke_rotated = True
    line.start_bridge()
    first = line.send("deny-1", HELLO)
    tokens.expire_access_tokens()
    second = line.send("deny-2", HELLO)
    assert [first["state"], second["state"]] == ["SUCCESS", "SUCCESS"]
    assert secret_manager.versions(REFRESH_SECRET) == 1 and secret_manager.adds[REFRESH_SECRET] == 0
    assert secret_manager.destroys[REFRESH_SECRET] == 0 and secret_manager.active(REFRESH_SECRET) == 1
    assert "could not store the rotated value as a new version of SMTP_OAUTH2_REFRESH_TOKEN_SECRET" in caplog.text
    assert "PERMISSION_DENIED" in caplog.text
    assert_hidden([refresh, CLIENT_SECRET, *tokens.refresh_tokens], caplog.text, first, second)


# -- rotation destroys the version it replaced --------------------------------------------------------

def test_each_rotation_destroys_the_version_it_replaced(line, oauth, secret_manager, caplog):
    """Microsoft rotates the refresh token on every refresh: each rotation adds a version and destroys
    the one this instance read (or added) before, so one version stays active (Secret Manager bills per
    active version) instead of one more per refresh."""
    tokens, server, refresh = oauth
    assert secret_manager.set(REFRESH_SECRET, refresh) == 1
    secret_manager.set(CLIENT_SECRET_SECRET, CLIENT_SECRET)
    line.configure(SMTP_OAUTH2_REFRESH_TOKEN_SECRET=REFRESH_SECRET, SMTP_OAUTH2_CLIENT_SECRET_SECRET=CLIENT_SECRET_SECRET)
    tokens.rotate = tokens.revoke_rotated = True
    line.start_bridge()

    deliveries = []
    for number in range(1, 6):
        deliveries.append(line.send(f"rotate-{number}", HELLO))
        assert deliveries[-1]["state"] == "SUCCESS", deliveries[-1]
        assert secret_manager.versions(REFRESH_SECRET) == number + 1
        assert secret_manager.active(REFRESH_SECRET) == 1, f"after rotation {number}"
        assert secret_manager.latest(REFRESH_SECRET) == tokens.refresh_tokens[-1]
        tokens.expire_access_tokens()
    # Exactly the version read (1), then each one it added (2..5): by number, never `latest`.
    assert secret_manager.destroyed == [f"{REFRESH_SECRET}/versions/{n}" for n in range(1, 6)]
    assert [secret_manager.state(REFRESH_SECRET, n) for n in range(1, 7)] == ["DESTROYED"] * 5 + ["ENABLED"]
    assert secret_manager.accesses[REFRESH_SECRET] == 1
    assert secret_manager.destroys[CLIENT_SECRET_SECRET] == 0 and secret_manager.active(CLIENT_SECRET_SECRET) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mailer")]
    assert_hidden([CLIENT_SECRET, refresh, *tokens.refresh_tokens, *tokens.access_tokens], caplog.text, *deliveries)


def test_a_version_the_instance_did_not_read_is_never_destroyed(line, oauth, secret_manager, caplog):
    """An operator adds a version while the instance works from the one it added: the next rotation
    destroys the instance's own version and leaves the operator's alone."""
    tokens, server, refresh = oauth
    secret_manager.set(REFRESH_SECRET, refresh)
    line.configure(SMTP_OAUTH2_REFRESH_TOKEN_SECRET=REFRESH_SECRET, SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET)
    tokens.rotate = True
    line.start_bridge()
    assert line.send("own-1", HELLO)["state"] == "SUCCESS"  # read v1, added v2, destroyed v1
    operators = tokens.add_refresh_token(MAILBOX)
    assert secret_manager.set(REFRESH_SECRET, operators) == 3
    tokens.expire_access_tokens()
    assert line.send("own-2", HELLO)["state"] == "SUCCESS"  # the cached v2 token: added v4, destroyed v2
    assert secret_manager.destroyed == [f"{REFRESH_SECRET}/versions/1", f"{REFRESH_SECRET}/versions/2"]
    assert secret_manager.state(REFRESH_SECRET, 3) == "ENABLED"
    assert_hidden([refresh, operators, *tokens.refresh_tokens], caplog.text)


@pytest.mark.parametrize("revoke_rotated", [False, True], ids=["old-token-still-valid", "old-token-revoked"])
def test_two_instances_rotating_from_the_same_version(secret_manager, token_endpoint, xoauth2_server, caplog,
                                                      revoke_rotated):
    """Two warm instances both read v1 and both rotate: the second one's destroy of v1 finds it already
    destroyed and says nothing; no email fails and at most two versions are ever active (one per
    instance), however many rotations follow."""
    from mailer.credentials import Credentials, ManagedSecret
    from mailer.transport import SmtpPool, parse_smtp_uri
    from tests.transport.helpers import RECIPIENT, SENDER, make_message

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mailer")  # (the function's own setup keeps "mailer" at INFO)
    tokens = token_endpoint(lifetime=3600)
    tokens.add_client(CLIENT_ID, CLIENT_SECRET)
    refresh = tokens.add_refresh_token(MAILBOX)
    tokens.rotate, tokens.revoke_rotated = True, revoke_rotated
    server = xoauth2_server(tokens)
    uri = server.uri(MAILBOX, authMethod="XOAUTH2", oauth2TokenUrl=tokens.url, oauth2ClientId=CLIENT_ID, pool=False)
    secret_manager.set(REFRESH_SECRET, refresh)
    secret_manager.set(CLIENT_SECRET_SECRET, CLIENT_SECRET)

    def instance() -> tuple[ManagedSecret, SmtpPool]:  # its own process-wide cache, as on another instance
        token = ManagedSecret("SMTP_OAUTH2_REFRESH_TOKEN_SECRET", REFRESH_SECRET, secret_manager.endpoint)
        client = ManagedSecret("SMTP_OAUTH2_CLIENT_SECRET_SECRET", CLIENT_SECRET_SECRET, secret_manager.endpoint)
        return token, SmtpPool(parse_smtp_uri(uri), Credentials(oauth2_client_secret=client, oauth2_refresh_token=token))

    (token_a, pool_a), (token_b, pool_b) = instance(), instance()
    try:
        assert token_a.get() == token_b.get() == refresh  # both read v1
        for round_ in range(3):
            for name, pool in (("a", pool_a), ("b", pool_b)):
                pool.send(SENDER, [RECIPIENT], make_message(f"{name} {round_}"))
                assert secret_manager.active(REFRESH_SECRET) <= 2
            tokens.expire_access_tokens()
    finally:
        pool_a.close()
        pool_b.close()
    assert len(server.messages) == 6
    assert 1 <= secret_manager.active(REFRESH_SECRET) <= 2
    assert secret_manager.latest(REFRESH_SECRET) in tokens.refresh_tokens
    assert all(name.rpartition("/versions/")[2].isdigit() for name in secret_manager.destroyed)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mailer")]
    if not revoke_rotated:  # B destroyed v1 after A had: refused (already destroyed), silently
        assert secret_manager.destroyed[:2] == [f"{REFRESH_SECRET}/versions/1"] * 2
        assert "already destroyed or disabled" in caplog.text
    assert_hidden([CLIENT_SECRET, refresh, *tokens.refresh_tokens, *tokens.access_tokens], caplog.text)


def test_a_refused_destroy_is_a_warning_and_the_email_still_goes(line, oauth, secret_manager, caplog):
    """The runtime account lacks secretVersionManager (e.g. still secretVersionAdder): the new version
    is stored and used, the old one stays active, the log says so without any token."""
    tokens, server, refresh = oauth
    secret_manager.set(REFRESH_SECRET, refresh)
    secret_manager.deny_destroy = True
    line.configure(SMTP_OAUTH2_REFRESH_TOKEN_SECRET=REFRESH_SECRET, SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET)
    tokens.rotate = tokens.revoke_rotated = True
    line.start_bridge()
    delivery = line.send("deny-destroy", HELLO)
    assert delivery["state"] == "SUCCESS", delivery
    assert len(server.messages) == 1
    assert secret_manager.destroyed == [f"{REFRESH_SECRET}/versions/1"]
    assert secret_manager.active(REFRESH_SECRET) == 2 and secret_manager.latest(REFRESH_SECRET) == tokens.refresh_tokens[-1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "mailer.credentials"]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "could not destroy version 1 of SMTP_OAUTH2_REFRESH_TOKEN_SECRET" in text and "PERMISSION_DENIED" in text
    assert_hidden([refresh, CLIENT_SECRET, *tokens.refresh_tokens, *tokens.access_tokens], caplog.text, delivery)

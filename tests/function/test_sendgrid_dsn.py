"""Issue 12 items 4 and 5 through the deployed function (emulator -> Eventarc-shaped events ->
functions-framework -> aiosmtpd with STARTTLS + AUTH): SendGrid fields arrive in one X-SMTPAPI header when
the provider is SendGrid and are refused naming the field otherwise; a dsn the server cannot honour (aiosmtpd
offers no DSN) ends in ERROR naming dsn, without a retry and without a message."""

from __future__ import annotations

import json

import pytest

from .conftest import SMTP_PASSWORD, SMTP_USER

DOCUMENT = {
    "to": "ada@example.com",
    "message": {"subject": "Welcome", "text": "Hello Ada"},
    "categories": ["welcome"],
    "sendGrid": {
        "customArgs": {"userId": "u-42", "note": "über " * 60},
        "ipPoolName": "transactional",
        "mailSettings": {"bypassListManagement": {"enable": True}},
    },
}


@pytest.fixture
def inbox(smtp_server):
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


def use(pipeline, server, **env):
    pipeline.configure(SMTP_CONNECTION_URI=server.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD, **env)


def test_sendgrid_fields_arrive_in_one_folded_x_smtpapi_header(pipeline, inbox):
    use(pipeline, inbox, SMTP_PROVIDER="sendgrid")
    pipeline.start_bridge()
    delivery = pipeline.send("sendgrid", DOCUMENT)
    assert delivery["state"] == "SUCCESS", delivery

    (received,) = inbox.messages
    head = received.content.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"X-SMTPAPI:") == 1
    lines = head.split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"X-SMTPAPI:"))
    end = start + 1
    while end < len(lines) and lines[end].startswith(b" "):
        end += 1
    folded = lines[start:end]
    assert len(folded) > 1 and all(len(line) <= 998 for line in folded)  # folded, as SendGrid asks
    assert json.loads(str(received.message["X-SMTPAPI"])) == {
        "category": ["welcome"],
        "unique_args": {"userId": "u-42", "note": "über " * 60},
        "ip_pool": "transactional",
        "filters": {"bypass_list_management": {"settings": {"enable": 1}}},
    }


def test_sendgrid_fields_are_refused_for_another_provider(pipeline, inbox):
    use(pipeline, inbox, SMTP_PROVIDER=None)  # custom, and the host is not smtp.sendgrid.net
    pipeline.start_bridge()
    delivery = pipeline.send("not-sendgrid", DOCUMENT)
    assert delivery["state"] == "ERROR", delivery
    assert delivery["error"].startswith("categories: SendGrid-only field"), delivery["error"]
    assert inbox.messages == [] and inbox.mail_commands == 0


def test_a_dsn_the_server_does_not_offer_is_a_permanent_error_naming_dsn(pipeline, inbox):
    use(pipeline, inbox)
    pipeline.start_bridge()
    delivery = pipeline.send("dsn", {"to": "ada@example.com", "message": {"subject": "s", "text": "t"},
                                     "dsn": {"id": "order-7", "notify": ["failure"]}})
    assert delivery["state"] == "ERROR", delivery
    assert delivery["attempts"] == 1
    assert delivery["error"].startswith("dsn: SMTP server ") and "does not offer DSN" in delivery["error"], delivery["error"]
    assert inbox.messages == [] and inbox.mail_commands == 0

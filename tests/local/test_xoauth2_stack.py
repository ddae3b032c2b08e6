"""`make demo ARGS=--xoauth2`: the local stack with SASL XOAUTH2 (issue 11). The inbox offers XOAUTH2
only and takes the bearer tokens of a local token endpoint; the function gets a client secret and a
refresh token instead of a password and refreshes once per token lifetime, not per email."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.documents import FINAL_STATES, wait_for_delivery
from local.mailbox import list_messages
from local.stack import LocalStack

HELLO = {"to": "ada@example.com", "message": {"subject": "Hi over XOAUTH2", "text": "body"}}


@pytest.fixture
def xoauth2_stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path / "demo", sweep_seconds=None, xoauth2=True)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def test_the_function_sends_over_xoauth2_with_one_refresh_for_many_emails(xoauth2_stack: LocalStack) -> None:
    stack = xoauth2_stack
    endpoint = stack.token_endpoint
    assert endpoint is not None
    for number in range(3):
        stack.mail(f"xo-{number}").create(HELLO)
    deliveries = [wait_for_delivery(stack.mail(f"xo-{number}"), 20, FINAL_STATES) for number in range(3)]
    assert [d["state"] for d in deliveries] == ["SUCCESS"] * 3, deliveries
    assert len(list_messages(stack.inbox_dir)) == 3
    assert endpoint.grants == 1  # process_mail refreshed once for three emails

    # The inbox offers XOAUTH2 only, and refuses a token it did not issue with the 334 error challenge.
    with smtplib.SMTP(stack.inbox.host, stack.inbox.port, timeout=10) as client:
        client.starttls(context=stack.inbox._tls.client_context())
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["XOAUTH2"]
        blob = base64.b64encode(f"user={endpoint.user}\x01auth=Bearer forged\x01\x01".encode()).decode()
        code, challenge = client.docmd("AUTH", "XOAUTH2 " + blob)
        assert code == 334 and b'"status": "401"' in base64.b64decode(challenge)
        assert client.docmd("")[0] == 535

    # No secret of the run in the function's log.
    log = stack.function_log.read_text()
    for secret in (endpoint.client_secret, endpoint.refresh_token):
        assert secret not in log


def test_without_the_flag_the_inbox_does_not_offer_xoauth2(tmp_path: Path) -> None:
    with LocalStack(tmp_path / "demo", sweep_seconds=None) as stack:
        assert stack.token_endpoint is None
        with smtplib.SMTP(stack.inbox.host, stack.inbox.port, timeout=10) as client:
            client.starttls(context=stack.inbox._tls.client_context())
            client.ehlo()
            assert "XOAUTH2" not in client.esmtp_features["auth"].split()

"""Injected inbox faults (`--inbox-fault`): refuse, a 4xx/5xx at a chosen stage, a stall; set at start,
with set_faults(), or through the fault file `make send ARGS="--inbox-fault SPEC"` writes."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from local.inbox import InboxFault, SmtpInbox, parse_fault, parse_faults, write_fault_file
from local.mailbox import list_messages

from .conftest import INBOX_PASSWORD, INBOX_USER, InboxUnderTest


def message(subject: str = "Fault") -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "app@example.com", "ada@example.com", subject
    mail["Message-ID"] = f"<{subject.replace(' ', '-')}-{time.monotonic_ns()}@example.com>"
    mail.set_content("body")
    return mail


def set_faults(inbox: InboxUnderTest, spec: str) -> None:
    inbox.smtp.set_faults(parse_faults(spec))
    time.sleep(0.2)


@pytest.mark.parametrize(
    ("spec", "error", "code"),
    [
        ("mail:452", smtplib.SMTPSenderRefused, 452),
        ("rcpt:451", smtplib.SMTPRecipientsRefused, None),
        ("data:554", smtplib.SMTPDataError, 554),
        ("data:451", smtplib.SMTPDataError, 451),
    ],
)
def test_a_fault_at_a_stage_answers_its_code(inbox: InboxUnderTest, spec: str, error: type, code: int | None) -> None:
    set_faults(inbox, spec)
    with pytest.raises(error) as raised:
        inbox.send(message())
    if code is not None:
        assert raised.value.smtp_code == code
        assert f"inbox fault {spec}" in raised.value.smtp_error.decode()
    else:
        assert raised.value.recipients["ada@example.com"][0] == 451
    assert list_messages(inbox.folder) == []
    set_faults(inbox, "none")  # and cleared, mail flows again
    inbox.send(message("After"))
    assert [m.subject for m in list_messages(inbox.folder)] == ["After"]


def test_a_greeting_fault_answers_and_hangs_up(inbox: InboxUnderTest) -> None:
    set_faults(inbox, "greeting:421")
    with pytest.raises(smtplib.SMTPConnectError) as raised:
        smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=5)
    assert raised.value.smtp_code == 421


def test_an_ehlo_fault_answers_ehlo_and_helo_gets_nowhere(inbox: InboxUnderTest) -> None:
    set_faults(inbox, "ehlo:550")
    with smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=5) as client:
        assert client.ehlo()[0] == 550
        assert client.helo()[0] >= 500  # 530: STARTTLS first, which needs the refused EHLO


def test_refuse_stops_listening_until_cleared(inbox: InboxUnderTest) -> None:
    set_faults(inbox, "refuse")
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=5)
    set_faults(inbox, "none")
    inbox.send(message("Back"))
    assert [m.subject for m in list_messages(inbox.folder)] == ["Back"]


def test_a_stall_delays_the_answer_then_goes_on(inbox: InboxUnderTest) -> None:
    set_faults(inbox, "stall:data:1.5")
    started = time.monotonic()
    inbox.send(message("Slow"))
    assert time.monotonic() - started >= 1.5
    assert [m.subject for m in list_messages(inbox.folder)] == ["Slow"]


def test_the_inbox_follows_its_fault_file(inbox: InboxUnderTest, tmp_path: Path) -> None:
    fault_file = tmp_path / "inbox-fault"
    write_fault_file(fault_file, [parse_fault("rcpt:550")])
    with SmtpInbox(tmp_path / "other", inbox.tls, INBOX_USER, INBOX_PASSWORD, fault_file=fault_file) as smtp:
        other = InboxUnderTest(smtp, inbox.web, inbox.tls, tmp_path / "other")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            other.send(message())
        write_fault_file(fault_file, [])
        time.sleep(0.5)
        other.send(message("Cleared"))
        write_fault_file(fault_file, parse_faults("data:451,stall:rcpt:0.1"))
        time.sleep(0.5)
        assert [str(fault) for fault in smtp.faults] == ["data:451", "stall:rcpt:0.1"]
        with pytest.raises(smtplib.SMTPDataError):
            other.send(message())
    assert [m.subject for m in list_messages(tmp_path / "other")] == ["Cleared"]


def test_fault_specs() -> None:
    assert parse_faults("none") == []
    assert parse_faults("refuse") == [InboxFault("refuse")]
    assert parse_faults("RCPT:451, stall:data:40") == [InboxFault("rcpt", code=451), InboxFault("data", stall_seconds=40)]
    for bad, says in [("rcpt:200", "400 to 599"), ("quit:451", "is not a fault"), ("stall:data:x", "not a number"),
                      ("data:451,data:554", "one fault per stage"), ("stall:data:0", "stall 0 to")]:
        with pytest.raises(ValueError, match=says):
            parse_faults(bad)

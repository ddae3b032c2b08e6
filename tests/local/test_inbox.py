"""The local SMTP inbox: STARTTLS and AUTH are required, every accepted message becomes an .eml file, and
the mailbox reader takes stored messages apart."""

from __future__ import annotations

import contextlib
import email
import email.policy
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from local.mailbox import list_messages, load_message, message_path

from .conftest import INBOX_PASSWORD, INBOX_USER, InboxUnderTest

LOGO = b"<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"


def simple_message(subject: str = "Hello", to: str = "ada@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Mailer <noreply@example.com>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("plain body\n")
    return message


def rich_message() -> EmailMessage:
    message = simple_message("Report")
    message.add_alternative('<p>Hi <img src="cid:logo%40mailer" alt="logo"></p>', subtype="html")
    message.get_payload()[1].add_related(LOGO, "image", "svg+xml", cid="<logo@mailer>", filename="logo.svg")
    message.add_attachment(b"month,sent\n05,1024\n", maintype="text", subtype="csv", filename="report.csv")
    return message


def test_a_plaintext_session_cannot_send(inbox: InboxUnderTest) -> None:
    with smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # no AUTH before TLS
        code, reply = client.docmd("MAIL FROM:<noreply@example.com>")
    assert code == 530 and b"STARTTLS" in reply
    assert list(inbox.folder.iterdir()) == []


def test_mail_before_auth_and_a_wrong_password_are_refused(inbox: InboxUnderTest) -> None:
    with smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=10) as client:
        client.starttls(context=inbox.tls.client_context())
        client.ehlo()
        assert client.docmd("MAIL FROM:<noreply@example.com>")[0] == 530
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(INBOX_USER, INBOX_PASSWORD + "-wrong")
    assert refused.value.smtp_code == 535
    with pytest.raises(smtplib.SMTPAuthenticationError):
        inbox.send(simple_message(), user="someone-else")
    assert list(inbox.folder.iterdir()) == []


def test_the_certificate_verifies_only_against_the_generated_ca(inbox: InboxUnderTest) -> None:
    with smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=10) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context())  # the system's CAs only
    for name in ("127.0.0.1", "localhost"):  # the names the function may dial
        with smtplib.SMTP(name, inbox.smtp.port, timeout=10) as client:
            client.starttls(context=inbox.tls.client_context())
            assert client.sock.getpeercert()["subjectAltName"]


def test_an_accepted_message_is_stored_as_eml_with_its_envelope(inbox: InboxUnderTest) -> None:
    message = simple_message("Stored")
    message["Cc"] = "grace@example.com"
    with smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=10) as client:
        client.starttls(context=inbox.tls.client_context())
        client.login(INBOX_USER, INBOX_PASSWORD)
        client.mail("bounces@example.com")
        for recipient in ("ada@example.com", "grace@example.com", "hidden@example.com"):  # the last: Bcc
            assert client.rcpt(recipient)[0] == 250
        code, reply = client.data(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
    assert code == 250
    stored_as = reply.decode().rsplit(" ", 1)[-1]
    path = message_path(inbox.folder, stored_as)
    assert path is not None and path.name == f"{stored_as}.eml"

    data = path.read_bytes()
    trace = (b"Return-Path: <bounces@example.com>\r\nDelivered-To: ada@example.com\r\n"
             b"Delivered-To: grace@example.com\r\nDelivered-To: hidden@example.com\r\n")
    assert data.startswith(trace)
    stored = email.message_from_bytes(data[len(trace):], policy=email.policy.default)
    assert stored["Subject"] == "Stored" and stored.get_content() == "plain body\r\n"  # as on the wire

    [summary] = list_messages(inbox.folder)
    assert (summary.id, summary.subject, summary.sender, summary.recipients, summary.size) == (
        stored_as, "Stored", "Mailer <noreply@example.com>", "ada@example.com", len(data))


def test_messages_are_listed_newest_first(inbox: InboxUnderTest) -> None:
    for subject in ("first", "second", "third"):
        inbox.send(simple_message(subject))
    assert [m.subject for m in list_messages(inbox.folder)] == ["third", "second", "first"]


def test_a_stored_message_is_taken_apart_for_viewing(inbox: InboxUnderTest) -> None:
    inbox.send(rich_message())
    [summary] = list_messages(inbox.folder)
    view = load_message(inbox.folder, summary.id)
    assert view is not None
    assert view.text == "plain body\n"
    # The cid: image (percent-encoded in the html, as RFC 2392 has it) is inlined as a data: URI.
    assert "cid:" not in view.html and 'src="data:image/svg+xml;base64,' in view.html
    assert [(a.filename, a.content_type, a.content_id, a.data) for a in view.attachments] == [
        ("logo.svg", "image/svg+xml", "logo@mailer", LOGO),
        ("report.csv", "text/csv", None, b"month,sent\n05,1024\n"),
    ]
    assert ("Subject", "Report") in view.headers


@pytest.mark.parametrize("message_id", ["../inbox/x", "..", ".hidden", "a/b", "", "x" * 200, "missing-0001"])
def test_ids_that_are_not_stored_messages_find_nothing(inbox: InboxUnderTest, message_id: str) -> None:
    inbox.send(simple_message())
    assert message_path(inbox.folder, message_id) is None
    assert load_message(inbox.folder, message_id) is None


# -- the +tempfail rule: the first copy of a Message-ID is refused after DATA, the next is accepted --------

def with_message_id(message: EmailMessage, message_id: str | None) -> EmailMessage:
    del message["Message-ID"]
    if message_id is not None:
        message["Message-ID"] = message_id
    return message


def test_a_tempfail_recipient_gets_451_once_per_message_id(inbox: InboxUnderTest) -> None:
    first = with_message_id(simple_message("Retried", to="ada+tempfail@example.com"), "<one@mailer.test>")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        inbox.send(first)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.3.0 Temporary local failure (demo: fails once)")
    assert list_messages(inbox.folder) == []  # a refused copy is not stored

    inbox.send(first)  # the retry: same Message-ID
    inbox.send(first)  # and any copy after it
    assert [m.message_id for m in list_messages(inbox.folder)] == ["<one@mailer.test>"] * 2

    # Another message to the same recipient fails once too.
    second = with_message_id(simple_message("Another", to="ada+tempfail@example.com"), "<two@mailer.test>")
    with pytest.raises(smtplib.SMTPDataError):
        inbox.send(second)
    inbox.send(second)
    assert inbox.smtp.tempfailed == {"<one@mailer.test>", "<two@mailer.test>"}


def test_one_tempfail_recipient_among_others_fails_the_transaction(inbox: InboxUnderTest) -> None:
    # The rule looks at the envelope (Bcc included), not the To header.
    message = with_message_id(simple_message("Mixed", to="grace@example.com"), "<mixed@mailer.test>")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        inbox.send(message, to_addrs=["grace@example.com", "Hidden+TEMPFAIL@example.com"])
    assert refused.value.smtp_code == 451
    assert inbox.send(message, to_addrs=["grace@example.com", "Hidden+TEMPFAIL@example.com"]) == {}
    [stored] = list_messages(inbox.folder)
    assert b"Delivered-To: Hidden+TEMPFAIL@example.com" in stored.path.read_bytes()


@pytest.mark.parametrize(
    ("recipient", "message_id"),
    [
        ("ada@example.com", "<plain@mailer.test>"),  # no +tempfail
        ("tempfail@example.com", "<bare@mailer.test>"),  # the local part must end with "+tempfail"
        ("ada+tempfailed@example.com", "<longer@mailer.test>"),
        ("ada@tempfail.example.com", "<domain@mailer.test>"),  # the domain does not count
        ("ada+tempfail@example.com", None),  # no Message-ID: a copy could not be recognised, so never refused
    ],
)
def test_other_messages_are_accepted_the_first_time(inbox: InboxUnderTest, recipient: str, message_id: str | None) -> None:
    assert inbox.send(with_message_id(simple_message(to=recipient), message_id)) == {}
    assert len(list_messages(inbox.folder)) == 1
    assert inbox.smtp.tempfailed == set()


@contextlib.contextmanager
def logged_in(inbox: InboxUnderTest, extension: str) -> Iterator[smtplib.SMTP]:
    """A client past STARTTLS and AUTH, once the inbox's EHLO has offered `extension`."""
    with smtplib.SMTP(inbox.smtp.host, inbox.smtp.port, timeout=10) as client:
        client.starttls(context=inbox.tls.client_context())
        client.ehlo()
        assert client.has_extn(extension)
        client.login(INBOX_USER, INBOX_PASSWORD)
        yield client


def test_the_inbox_advertises_pipelining_and_takes_a_pipelined_envelope(inbox: InboxUnderTest) -> None:
    with logged_in(inbox, "pipelining") as client:
        # MAIL, two RCPTs and DATA in one write, as the function's transport sends them (RFC 2920).
        client.send(b"MAIL FROM:<bounces@example.com>\r\nRCPT TO:<ada@example.com>\r\n"
                    b"RCPT TO:<grace@example.com>\r\nDATA\r\n")
        replies = [client.getreply()[0] for _ in range(4)]
        assert replies == [250, 250, 250, 354]
        client.send(simple_message("Pipelined").as_bytes(policy=email.policy.SMTP) + b".\r\n")
        assert client.getreply()[0] == 250
    [summary] = list_messages(inbox.folder)
    assert summary.subject == "Pipelined"


# -- delivery status notifications (RFC 3461) ------------------------------------------------------------

def dsn_session(inbox: InboxUnderTest, commands: list[str]) -> list[tuple[int, bytes]]:
    """EHLO, STARTTLS, AUTH, then each command; the replies to the commands."""
    with logged_in(inbox, "dsn") as client:
        return [client.docmd(command) for command in commands]


def test_the_inbox_offers_dsn_and_records_the_parameters_as_sent(inbox: InboxUnderTest) -> None:
    with logged_in(inbox, "dsn") as client:
        orcpt = "ORCPT=rfc822;" + "a" * 64 + "+2Btag@example.com"
        client.send_message(simple_message("With DSN"), "bounces@example.com",
                            ["ada@example.com", "grace@example.com"],
                            mail_options=["RET=HDRS", "ENVID=Order+2B123+3Dx"],
                            rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY", orcpt])
    [summary] = list_messages(inbox.folder)
    data = message_path(inbox.folder, summary.id).read_bytes()
    assert data.startswith(
        b"Return-Path: <bounces@example.com>\r\nDelivered-To: ada@example.com\r\nDelivered-To: grace@example.com\r\n"
        b"X-Inbox-DSN: MAIL RET=HDRS ENVID=Order+2B123+3Dx\r\n"  # as written: the envelope id keeps its case
        b"X-Inbox-DSN: RCPT <ada@example.com> NOTIFY=SUCCESS,FAILURE,DELAY " + orcpt.encode() + b"\r\n"
        b"X-Inbox-DSN: RCPT <grace@example.com> NOTIFY=SUCCESS,FAILURE,DELAY " + orcpt.encode() + b"\r\n"
        b"From: ")
    assert summary.subject == "With DSN"


@pytest.mark.parametrize("mail, rcpt", [
    ("RET=SOME", "NOTIFY=NEVER"),
    ("ENVID=a+zz", "NOTIFY=NEVER"),
    ("ENVID=" + "x" * 101, "NOTIFY=NEVER"),
    ("RET=FULL RET=HDRS", "NOTIFY=NEVER"),
    ("RET=FULL", "NOTIFY=NEVER,SUCCESS"),
    ("RET=FULL", "NOTIFY=SUCCESS,SUCCESS"),
    ("RET=FULL", "ORCPT=ada@example.com"),
    ("RET=FULL", "ORCPT=rfc822;a=b@example.com"),
])
def test_malformed_dsn_parameters_get_501(inbox: InboxUnderTest, mail: str, rcpt: str) -> None:
    mail_reply, rcpt_reply = dsn_session(inbox, [f"MAIL FROM:<b@example.com> {mail}", f"RCPT TO:<ada@example.com> {rcpt}"])
    good_mail = mail in ("RET=FULL",)
    assert mail_reply[0] == (250 if good_mail else 501), mail_reply
    if good_mail:
        assert rcpt_reply[0] == 501 and rcpt_reply[1].startswith(b"5.5.4 Bad "), rcpt_reply
    else:
        assert mail_reply[1].startswith(b"5.5.4 ")


def test_dsn_parameters_belong_to_their_command(inbox: InboxUnderTest) -> None:
    replies = dsn_session(inbox, ["MAIL FROM:<b@example.com> NOTIFY=NEVER", "MAIL FROM:<b@example.com> SIZE=10 RET=FULL",
                                  "RCPT TO:<ada@example.com> ENVID=x", "RCPT TO:<ada@example.com> NOTIFY=never"])
    assert [code for code, _ in replies] == [555, 250, 555, 250]

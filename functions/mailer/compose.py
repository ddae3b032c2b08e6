"""Building the MIME message and SMTP envelope for a final (templates and uids resolved) MailRequest.

Structure: text, amp (text/x-amp-html) and html as multipart/alternative in that order; inline
attachments with a cid are wrapped with the html in multipart/related; every other attachment
goes into multipart/mixed. Bcc never appears in a header: bcc recipients live in the envelope only.

Templates run after the document was validated, so every header-bound string is checked again here.
"""

from __future__ import annotations

import email
import email.policy
import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime, make_msgid

from mailer.addresses import Mailbox
from mailer.document import (
    Attachment,
    MailInputError,
    MailRequest,
    check_attachment,
    check_subject,
    cid_value,
    parse_content_type,
    parse_headers,
)

MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1, without the CRLF
# Built-in table only: /etc/mime.types differs between this machine and the Cloud Functions image.
_MIME_TYPES = mimetypes.MimeTypes(filenames=())
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,200}@[A-Za-z0-9.-]{1,253}>")
_SEVEN_BIT_SAFE = re.compile(r"[\t\x20-\x7e]*")


@dataclass(frozen=True)
class ComposeDefaults:
    default_from: Mailbox | None
    default_reply_to: Mailbox | None
    max_message_bytes: int


@dataclass
class ComposedMail:
    message: EmailMessage
    envelope_from: str
    recipients: list[str]  # to + cc + bcc, de-duplicated, first occurrence kept
    smtputf8: bool  # serialize with email.policy.SMTPUTF8 and send with the SMTPUTF8 extension
    message_id: str  # as in the header: "<...@...>"


def compose(
    request: MailRequest,
    defaults: ComposeDefaults,
    *,
    message_id_domain: str | None = None,
    message_id: str | None = None,
) -> ComposedMail:
    """Build the message; raises MailInputError naming the field that prevents it. `message_id` keeps an
    earlier attempt's Message-ID (receivers drop a copy they already have); one that is not a plain
    `<local@domain>` is ignored and a new one made, since it comes from a document a client can write."""
    sender = request.from_ or defaults.default_from
    if sender is None:
        raise MailInputError("from", "no sender: set from in the document or DEFAULT_FROM in the function's configuration")
    reply_to = request.reply_to or defaults.default_reply_to
    recipients = _envelope_recipients(request)
    subject = _required_subject(request.subject)
    _require_body(request)
    headers = parse_headers(request.headers)
    for index, attachment in enumerate(request.attachments):
        check_attachment(attachment, f"message.attachments[{index}]")

    everyone = [sender, *request.to, *request.cc, *request.bcc, *([reply_to] if reply_to else [])]
    smtputf8 = any(mailbox.needs_smtputf8() for mailbox in everyone)
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    if message_id is None or not _MESSAGE_ID.fullmatch(message_id):
        message_id = make_msgid(domain=_message_id_domain(message_id_domain, sender))

    message = EmailMessage(policy=policy)
    message["From"] = _header_address(sender)
    if request.to:
        message["To"] = [_header_address(mailbox) for mailbox in request.to]
    if request.cc:
        message["Cc"] = [_header_address(mailbox) for mailbox in request.cc]
    if reply_to:
        message["Reply-To"] = _header_address(reply_to)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    for name, value in headers.items():
        message[name] = value
    _render(_body_tree(request), message, policy)

    serialized = message.as_bytes(policy=policy)
    _check_size(serialized, defaults.max_message_bytes)
    verify_serialized_headers(message, serialized)
    return ComposedMail(
        message=message,
        envelope_from=sender.wire_addr_spec(),
        recipients=recipients,
        smtputf8=smtputf8,
        message_id=message_id,
    )


def _envelope_recipients(request: MailRequest) -> list[str]:
    recipients = list(dict.fromkeys(mailbox.wire_addr_spec() for mailbox in [*request.to, *request.cc, *request.bcc]))
    if not recipients:
        raise MailInputError("to", "no recipients: to, cc and bcc are empty (after resolving toUids/ccUids/bccUids)")
    return recipients


def _required_subject(subject: str | None) -> str:
    if subject is None or not subject.strip():
        raise MailInputError("message.subject", "missing subject: set message.subject or use a template that renders one")
    check_subject(subject)
    return subject


def _require_body(request: MailRequest) -> None:
    if not (request.text or request.html or request.amp):
        raise MailInputError("message.text", "no body: set message.text or message.html (or use a template that renders one)")
    if request.amp and not (request.text or request.html):
        raise MailInputError("message.html", "an AMP body needs a text or html fallback: set message.html or message.text")


def _message_id_domain(configured: str | None, sender: Mailbox) -> str:
    if configured is None:
        return sender.wire_addr_spec().rpartition("@")[2]
    if not _HOSTNAME.fullmatch(configured):
        raise ValueError(f"message_id_domain: {configured!r} is not an ASCII host name")
    return configured


def _header_address(mailbox: Mailbox) -> Address:
    local, _, domain = mailbox.wire_addr_spec().rpartition("@")
    return Address(display_name=mailbox.display_name, username=local, domain=domain)


# A body tree node: ("multipart", subtype, children) | ("text", subtype, body) | ("attachment", Attachment)
Node = tuple


def _body_tree(request: MailRequest) -> Node:
    with_html = bool(request.html)
    related = [a for a in request.attachments if with_html and a.cid and _disposition(a) == "inline"]
    mixed = [a for a in request.attachments if not any(a is r for r in related)]

    alternatives: list[Node] = []
    if request.text:
        alternatives.append(("text", "plain", request.text))
    if request.amp:
        alternatives.append(("text", "x-amp-html", request.amp))
    if request.html:
        html: Node = ("text", "html", request.html)
        if related:
            html = ("multipart", "related", [html, *(("attachment", a) for a in related)])
        alternatives.append(html)

    body = alternatives[0] if len(alternatives) == 1 else ("multipart", "alternative", alternatives)
    if mixed:
        body = ("multipart", "mixed", [body, *(("attachment", a) for a in mixed)])
    return body


def _disposition(attachment: Attachment) -> str:
    # Attachments built by templates may leave it unset: same default as documents.
    return attachment.disposition or ("inline" if attachment.cid else "attachment")


def _render(node: Node, part: MIMEPart, policy: email.policy.Policy) -> None:
    kind = node[0]
    if kind == "multipart":
        _, subtype, children = node
        part["Content-Type"] = f"multipart/{subtype}"
        if subtype == "related":
            # RFC 2387 requires the type of the root part; the html is always first.
            part.set_param("type", "text/html")
        for child in children:
            child_part = MIMEPart(policy=policy)
            _render(child, child_part, policy)
            part.attach(child_part)
    elif kind == "text":
        _, subtype, body = node
        part.set_content(body, subtype=subtype, charset="utf-8", cte=_text_transfer_encoding(body))
    else:
        _render_attachment(node[1], part)


def _text_transfer_encoding(body: str) -> str:
    # 7bit only when it is plainly safe; otherwise quoted-printable keeps lines short and 8-bit free,
    # so no server needs 8BITMIME.
    lines = re.split(r"\r\n|\r|\n", body)
    if all(_SEVEN_BIT_SAFE.fullmatch(line) and len(line) <= MAX_LINE_OCTETS for line in lines):
        return "7bit"
    return "quoted-printable"


def _render_attachment(attachment: Attachment, part: MIMEPart) -> None:
    maintype, subtype, params = _content_type(attachment)
    part.set_content(
        attachment.content,
        maintype,
        subtype,
        disposition=_disposition(attachment),
        filename=attachment.filename,
        cid=f"<{cid_value(attachment.cid)}>" if attachment.cid else None,
        params=params,
    )


def _content_type(attachment: Attachment) -> tuple[str, str, dict[str, str]]:
    if attachment.content_type:
        return parse_content_type(attachment.content_type, "message.attachments.contentType")
    guessed = _MIME_TYPES.guess_type(attachment.filename, strict=False)[0] if attachment.filename else None
    maintype, _, subtype = (guessed or "application/octet-stream").partition("/")
    return maintype, subtype, {}


def _check_size(serialized: bytes, limit: int) -> None:
    if len(serialized) > limit:
        raise MailInputError(
            "message", f"message is {len(serialized)} bytes, over the limit of {limit} bytes (MAX_MESSAGE_BYTES)"
        )
    for number, line in enumerate(serialized.split(b"\r\n"), start=1):
        if len(line) > MAX_LINE_OCTETS:
            raise MailInputError("message", f"line {number} of the message is {len(line)} octets, over SMTP's 998")


def verify_serialized_headers(message: EmailMessage, serialized: bytes) -> None:
    """Re-parse the bytes and insist every part has exactly the header fields it was built with.

    Defence in depth: some Python releases re-emit decoded text raw when folding headers, which
    turns a crafted value into extra header lines (for example a Bcc).
    """
    reparsed = email.message_from_bytes(serialized, policy=email.policy.default)
    if _header_names(message) != _header_names(reparsed):
        raise MailInputError("message", "a header did not survive serialization intact (possible header injection); refused")


def _header_names(part: email.message.Message) -> list:
    """Header names of a part and, for multiparts only, of its children (attached messages stay opaque)."""
    names: list = [name.lower() for name in part.keys()]
    if part.get_content_maintype() == "multipart":
        names.append([_header_names(child) for child in part.get_payload()])
    return names

"""Building the MIME message and SMTP envelope for a final (templates and uids resolved) MailRequest.

Structure: text, amp (text/x-amp-html) and html as multipart/alternative in that order; inline
attachments with a cid are wrapped with the html in multipart/related; every other attachment
goes into multipart/mixed. Bcc never appears in a header: bcc recipients live in the envelope only.

Templates run after the document was validated, so every header-bound string is checked again here.
The message is serialized once, by mailer.mime, whose headers are safe by construction (validated
inputs, encoded non-ASCII, folding that cannot open a new header line); nothing re-parses the output.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from mailer import mime
from mailer.addresses import Mailbox
from mailer.dsn import DsnRequest
from mailer.document import (
    Attachment,
    MailInputError,
    MailRequest,
    SendGridOptions,
    check_attachment,
    check_body,
    check_subject,
    cid_value,
    parse_content_type,
    parse_headers,
)

if TYPE_CHECKING:
    from email.message import EmailMessage

MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1, without the CRLF

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,200}@[A-Za-z0-9.-]{1,253}>")


@functools.cache
def _mime_types() -> mimetypes.MimeTypes:
    """Built-in table only: /etc/mime.types differs between this machine and the Cloud Functions image.
    Built on first use, by an attachment without a contentType: the constructor still reads the system's
    files into the module-level table (3-8 ms), which most emails never need, at cold start or after."""
    return mimetypes.MimeTypes(filenames=())


@dataclass(frozen=True)
class ComposeDefaults:
    default_from: Mailbox | None
    default_reply_to: Mailbox | None
    max_message_bytes: int
    sendgrid: bool = False  # mail goes through SendGrid (settings.sendgrid): SendGrid fields may be used


@dataclass
class ComposedMail:
    payload: bytes  # the message as sent: CRLF line endings, no Bcc header, not dot-stuffed
    envelope_from: str
    recipients: list[str]  # to + cc + bcc, de-duplicated, first occurrence kept
    smtputf8: bool  # headers may hold UTF-8 (RFC 6532): send with the SMTPUTF8 extension
    message_id: str  # as in the header: "<...@...>"
    dsn: DsnRequest | None = None  # RFC 3461 parameters for MAIL FROM / RCPT TO (the document's dsn)

    @functools.cached_property
    def message(self) -> EmailMessage:
        """The payload parsed (on first use only) with email.policy.SMTPUTF8 or SMTP: for tests and tools.
        Sending uses `payload`; the email package's parser is imported only here."""
        import email
        import email.policy

        policy = email.policy.SMTPUTF8 if self.smtputf8 else email.policy.SMTP
        return email.message_from_bytes(self.payload, policy=policy)  # type: ignore[return-value]


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
    smtpapi = smtpapi_header(request.sendgrid, defaults.sendgrid)
    _check_dsn(request, recipients)
    for index, attachment in enumerate(request.attachments):
        check_attachment(attachment, f"message.attachments[{index}]")

    everyone = [sender, *request.to, *request.cc, *request.bcc, *([reply_to] if reply_to else [])]
    smtputf8 = any(mailbox.needs_smtputf8() for mailbox in everyone)
    if message_id is None or not _MESSAGE_ID.fullmatch(message_id):
        message_id = mime.new_message_id(_message_id_domain(message_id_domain, sender))

    head = [mime.address_list("From", [_header_address(sender)], smtputf8)]
    if request.to:
        head.append(mime.address_list("To", [_header_address(mailbox) for mailbox in request.to], smtputf8))
    if request.cc:
        head.append(mime.address_list("Cc", [_header_address(mailbox) for mailbox in request.cc], smtputf8))
    if reply_to:
        head.append(mime.address_list("Reply-To", [_header_address(reply_to)], smtputf8))
    head.append(mime.unstructured("Subject", subject, smtputf8))
    head.append(mime.simple("Date", mime.date_value(datetime.now(timezone.utc))))
    head.append(mime.simple("Message-ID", message_id))
    head.append("MIME-Version: 1.0\r\n")
    for name, value in headers.items():
        head.append(mime.unstructured(name, value, smtputf8))
    if smtpapi is not None:
        head.append(mime.folded_ascii(SMTPAPI_HEADER, smtpapi[0], smtpapi[1]))
    payload = mime.entity_bytes(_render(_body_tree(request), smtputf8), smtputf8, head)

    _check_size(payload, defaults.max_message_bytes)
    return ComposedMail(
        payload=payload,
        envelope_from=sender.wire_addr_spec(),
        recipients=recipients,
        smtputf8=smtputf8,
        message_id=message_id,
        dsn=request.dsn,
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
    for key in ("text", "html", "amp"):
        body = getattr(request, key)
        if body:
            check_body(body, f"message.{key}")
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


def _header_address(mailbox: Mailbox) -> tuple[str, str]:
    return mailbox.display_name, mailbox.wire_addr_spec()


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


def _render(node: Node, utf8: bool) -> mime.Part:
    kind = node[0]
    if kind == "multipart":
        _, subtype, children = node
        # RFC 2387 requires the type of the root part; the html is always first.
        params = [("type", "text/html")] if subtype == "related" else []
        return mime.multipart(subtype, [_render(child, utf8) for child in children], utf8, params)
    if kind == "text":
        _, subtype, body = node
        return mime.text_part(subtype, body)
    return _render_attachment(node[1])


def _render_attachment(attachment: Attachment) -> mime.Part:
    maintype, subtype, params = _content_type(attachment)
    return mime.binary_part(
        f"{maintype}/{subtype}",
        list(params.items()),
        _disposition(attachment),
        attachment.filename,
        cid_value(attachment.cid) if attachment.cid else None,
        attachment.content,
    )


def _content_type(attachment: Attachment) -> tuple[str, str, dict[str, str]]:
    if attachment.content_type:
        return parse_content_type(attachment.content_type, "message.attachments.contentType")
    guessed = _mime_types().guess_type(attachment.filename, strict=False)[0] if attachment.filename else None
    maintype, _, subtype = (guessed or "application/octet-stream").partition("/")
    return maintype, subtype, {}


def _check_size(serialized: bytes, limit: int) -> None:
    if len(serialized) > limit:
        raise MailInputError(
            "message", f"message is {len(serialized)} bytes, over the limit of {limit} bytes (MAX_MESSAGE_BYTES)"
        )
    # mime.py writes bodies in lines of at most 76 octets (base64, quoted-printable) or checks them
    # (7bit) and folds headers under 998 octets; only the header section is measured here, in C.
    head = serialized[: serialized.find(b"\r\n\r\n")]
    if len(head) > MAX_LINE_OCTETS and max(map(len, head.split(b"\r\n"))) > MAX_LINE_OCTETS:
        for number, line in enumerate(serialized.split(b"\r\n"), start=1):
            if len(line) > MAX_LINE_OCTETS:
                raise MailInputError("message", f"line {number} of the message is {len(line)} octets, over SMTP's 998")


# -- SendGrid's X-SMTPAPI header and the dsn envelope check (issue 12 items 4 and 5) -------------------
SMTPAPI_HEADER = "X-SMTPAPI"
# SendGrid documents 10,000 bytes for the unique arguments of the SMTP API JSON; the whole JSON is held to
# it, so a document cannot make a header SendGrid may cut or refuse.
MAX_SMTPAPI_BYTES = 10_000


def smtpapi_header(options: SendGridOptions | None, sendgrid: bool) -> tuple[str, str] | None:
    """(JSON text, field to blame) of SendGrid's X-SMTPAPI header for the document's SendGrid fields, or
    None when it has none. Refuses them when mail does not go through SendGrid (a document cannot set the
    header itself: document.OWNED_HEADERS). The JSON is ASCII (non-ASCII as \\u escapes) with a space after each , and :
    so mime.folded_ascii can fold it between tokens (SendGrid: fold it under 1,000 characters a line)."""
    if options is None:
        return None
    if not sendgrid:
        raise MailInputError(
            options.fields[0],
            "SendGrid-only field (sent in SendGrid's X-SMTPAPI header), but mail does not go through SendGrid: "
            "set SMTP_PROVIDER=sendgrid (or an SMTP_CONNECTION_URI with host smtp.sendgrid.net) or remove the field",
        )
    parts: dict[str, tuple[str, object]] = {}  # JSON key -> (document field, value)
    if options.categories:
        parts["category"] = ("categories", list(options.categories))
    if options.custom_args:
        parts["unique_args"] = ("sendGrid.customArgs", dict(options.custom_args))
    if options.ip_pool:
        parts["ip_pool"] = ("sendGrid.ipPoolName", options.ip_pool)
    if options.filters:
        blame = "sendGrid.mailSettings" if "sendGrid.mailSettings" in options.fields else "sendGrid.templateId"
        parts["filters"] = (blame, dict(options.filters))
    document = {key: value for key, (_, value) in parts.items()}
    text = json.dumps(document, ensure_ascii=True, separators=(", ", ": "))
    if len(text) > MAX_SMTPAPI_BYTES:
        largest = max(parts.values(), key=lambda part: len(json.dumps(part[1], ensure_ascii=True)))[0]
        raise MailInputError(
            largest, f"SendGrid's X-SMTPAPI header would be {len(text)} bytes of JSON, over the limit of {MAX_SMTPAPI_BYTES}"
        )
    return text, parts[next(iter(parts))][0] if len(parts) == 1 else ", ".join(field for field, _ in parts.values())


def _check_dsn(request: MailRequest, recipients: list[str]) -> None:
    dsn = request.dsn
    if dsn is not None and dsn.orcpt is not None and len(recipients) > 1:
        raise MailInputError(
            "dsn.recipient",
            f"names the original recipient of one RCPT (ORCPT), but this mail has {len(recipients)} envelope recipients; "
            "leave dsn.recipient out or send one document per recipient",
        )

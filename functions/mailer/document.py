"""Validation of a mail document (the Firebase "Trigger Email" shape) into a MailRequest.

Rules that are choices rather than facts of the contract:
- Unknown top-level fields are ignored: apps keep their own data in mail documents
  (``delivery``, ``createdAt``, ...).
- Unknown keys inside ``message``, ``template`` and each attachment are refused, so a typo such
  as ``message.htlm`` fails loudly instead of sending a mail without its body. nodemailer options
  the extension passed through (``message.priority``, ``attachments[].raw`` ...) are refused too.
- ``path`` and ``href`` attachments are refused: they let a document read the function's files
  or fetch internal URLs.
- An empty string in to/cc/bcc/from/replyTo means "not set" (apps often write "" for unused fields).
- Header values may be strings or numbers (converted with str()); headers the function owns are refused.
- Attachment ``contentDisposition`` defaults to "inline" when a ``cid`` is given (so ``cid:`` images
  in the html work as they did), else "attachment".
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailer.addresses import (
    AddressError,
    Mailbox,
    firestore_type_name,
    header_text_problem,
    one_line,
    parse_address_list,
    parse_mailbox,
    shown,
    text_problem,
)

MESSAGE_KEYS = ("subject", "text", "html", "amp", "attachments")
TEMPLATE_KEYS = ("name", "data", "fallback")
ATTACHMENT_KEYS = ("filename", "content", "encoding", "contentType", "cid", "contentDisposition")
# Keys apps sometimes put inside `message` that belong at the top level of the document.
_TOP_LEVEL_KEYS = {"to", "cc", "bcc", "from", "replyTo", "headers", "toUids", "ccUids", "bccUids"}

# Lower-cased header name -> which document field to use instead.
OWNED_HEADERS = {
    "from": "use the document's from field",
    "sender": "use the document's from field",
    "to": "use the document's to field",
    "cc": "use the document's cc field",
    "bcc": "use the document's bcc field",
    "reply-to": "use the document's replyTo field",
    "subject": "use message.subject",
    "message-id": "the function generates it",
    "date": "the function sets it",
    "orig-date": "the function sets Date",
    "mime-version": "the function sets it",
    "content-type": "use message.text/html/amp and attachments[].contentType",
    "content-transfer-encoding": "the function chooses the encoding",
    "content-disposition": "use attachments[].contentDisposition",
    "content-id": "use attachments[].cid",
    "return-path": "the receiving server sets it from the envelope sender",
    "received": "mail servers add it",
    "delivered-to": "mail servers add it",
}
_RESENT_PREFIX = "resent-"
# RFC 5322 field-name: printable ASCII except colon.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
MAX_HEADER_NAME_CHARS = 76
# Unstructured header texts: long enough for any real subject or header, short enough that one document
# cannot make a megabyte of header (SMTP allows any length once folded; mail clients cut far shorter).
MAX_SUBJECT_CHARS = 2000
MAX_HEADER_VALUE_CHARS = 2000
MAX_CID_CHARS = 200
MAX_CONTENT_TYPE_NAME_CHARS = 127  # RFC 6838 4.2, so a Content-Type line stays under SMTP's 998 octets
_MIME_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(
    rf"\s*(?P<maintype>{_MIME_TOKEN})/(?P<subtype>{_MIME_TOKEN})\s*"
    rf'(?P<params>(?:;\s*{_MIME_TOKEN}=(?:{_MIME_TOKEN}|"[^"\\]*")\s*)*)'
)
_PARAM = re.compile(rf'(?P<name>{_MIME_TOKEN})=(?:(?P<token>{_MIME_TOKEN})|"(?P<quoted>[^"\\]*)")')
_DISPOSITIONS = ("attachment", "inline")
_CID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")  # printable ASCII without < > or space
# A user id is used as a document id in the users collection: no path separators or reserved ids.
_RESERVED_ID = re.compile(r"__.*__")
# A map key shown as `parent.key` in a field name; any other key is shown quoted, `parent['k: v']`.
_UNPLAIN_KEY = re.compile(r"""[\s:'"\[\]\\]""")
_SHOWN_KEY_CHARS = 200


class MailInputError(ValueError):
    """A mail document that cannot be sent as written; str() is one line starting with the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = one_line(field)
        self.reason = one_line(reason)
        super().__init__(f"{self.field}: {self.reason}")


@dataclass
class Attachment:
    filename: str | None
    content: bytes
    content_type: str | None
    cid: str | None
    disposition: str | None  # "attachment" | "inline"


@dataclass
class TemplateRef:
    name: str
    data: dict
    fallback: str | None  # template to use when `name` does not exist


@dataclass
class MailRequest:
    to: list[Mailbox] = field(default_factory=list)
    cc: list[Mailbox] = field(default_factory=list)
    bcc: list[Mailbox] = field(default_factory=list)
    to_uids: list[str] = field(default_factory=list)
    cc_uids: list[str] = field(default_factory=list)
    bcc_uids: list[str] = field(default_factory=list)
    from_: Mailbox | None = None
    reply_to: Mailbox | None = None
    headers: dict[str, str] = field(default_factory=dict)
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    amp: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    template: TemplateRef | None = None


def parse_mail_document(data: dict) -> MailRequest:
    """Validate a mail document's data (Firestore values as Python objects) into a MailRequest."""
    if not isinstance(data, Mapping):
        raise MailInputError("document", f"expected a map, got {firestore_type_name(data)}")
    try:
        request = MailRequest(
            to=_address_list(data, "to"),
            cc=_address_list(data, "cc"),
            bcc=_address_list(data, "bcc"),
            to_uids=_uid_list(data, "toUids"),
            cc_uids=_uid_list(data, "ccUids"),
            bcc_uids=_uid_list(data, "bccUids"),
            from_=_single_address(data, "from"),
            reply_to=_single_address(data, "replyTo"),
            headers=parse_headers(data.get("headers")),
            template=_template(data.get("template")),
        )
    except AddressError as error:
        raise MailInputError(error.field, error.reason) from None
    if not any((request.to, request.cc, request.bcc, request.to_uids, request.cc_uids, request.bcc_uids)):
        raise MailInputError("to", "no recipients: set to, cc, bcc or toUids/ccUids/bccUids")
    message = data.get("message")
    if message is None and request.template is None:
        raise MailInputError("message", "no message and no template: set message {subject, text|html} or template {name, data}")
    if message is not None:
        _fill_message(request, message)
    return request


def _address_list(data: Mapping, key: str) -> list[Mailbox]:
    value = data.get(key)
    if value is None:
        return []
    return parse_address_list(value, key)


def _single_address(data: Mapping, key: str) -> Mailbox | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_mailbox(value, key)


def _uid_list(data: Mapping, key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise MailInputError(key, f"expected a list of user ids, got {firestore_type_name(value)}")
    uids = []
    for index, uid in enumerate(value):
        uids.append(check_document_id(uid, f"{key}[{index}]", "user ids"))
    return uids


def check_document_id(value: object, field: str, what: str) -> str:
    """A value used as a Firestore document id: it must not be able to point at another path."""
    if not isinstance(value, str):
        raise MailInputError(field, f"{what} must be strings, got {firestore_type_name(value)}")
    if not value:
        raise MailInputError(field, f"{what} must not be empty")
    if "/" in value or value in (".", "..") or _RESERVED_ID.fullmatch(value):
        raise MailInputError(field, f"{shown(value)} is not a valid document id ({what} must not contain '/', be '.' or '..', or look like __name__)")
    if len(value.encode("utf-8")) > 1500:
        raise MailInputError(field, f"{what} must be at most 1500 bytes")
    return value


def parse_headers(value: object) -> dict[str, str]:
    """Validate the document's `headers` map: safe names, one-line values, no headers the function owns."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MailInputError("headers", f"expected a map of header names to values, got {firestore_type_name(value)}")
    headers: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, raw_value in value.items():
        field_name = member("headers", name)
        _check_header_name(name, field_name)
        earlier = seen.get(name.lower())
        if earlier is not None:
            raise MailInputError(field_name, f"duplicate of header {earlier} (header names are case-insensitive)")
        seen[name.lower()] = name
        headers[name] = _header_value(raw_value, field_name)
    return headers


def _check_header_name(name: object, field_name: str) -> None:
    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
        raise MailInputError(field_name, "header names must be printable ASCII without spaces or ':'")
    if len(name) > MAX_HEADER_NAME_CHARS:
        raise MailInputError(field_name, f"header names must be at most {MAX_HEADER_NAME_CHARS} characters")
    lowered = name.lower()
    if lowered in OWNED_HEADERS:
        raise MailInputError(field_name, f"this header is set by the function; {OWNED_HEADERS[lowered]}")
    if lowered.startswith(_RESENT_PREFIX):
        raise MailInputError(field_name, "Resent-* headers are for re-sending an existing message and cannot be set")


def member(parent: str, key: object) -> str:
    """The field name of `parent`'s member `key`: `parent.key`, or `parent['key']` when the key holds
    anything (a space, ':', a control or format character) that would make an error message ambiguous."""
    if isinstance(key, str) and key.isprintable() and not _UNPLAIN_KEY.search(key) and 0 < len(key) <= _SHOWN_KEY_CHARS:
        return f"{parent}.{key}"
    return f"{parent}[{shown(key) if isinstance(key, str) else repr(key)[:_SHOWN_KEY_CHARS]}]"


def _header_value(value: object, field_name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MailInputError(field_name, f"header values must be strings or numbers, got {firestore_type_name(value)}")
    text = value if isinstance(value, str) else str(value)
    problem = header_text_problem(text)
    if problem:
        raise MailInputError(field_name, f"header values {problem}")
    if len(text) > MAX_HEADER_VALUE_CHARS:
        raise MailInputError(field_name, f"header values must be at most {MAX_HEADER_VALUE_CHARS} characters, this one has {len(text)}")
    return text


def _template(value: object) -> TemplateRef | None:
    if value is None:
        return None
    mapping = _strict_map(value, "template", TEMPLATE_KEYS)
    name = check_document_id(mapping.get("name"), "template.name", "template names")
    data = mapping.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, Mapping):
        raise MailInputError("template.data", f"expected a map, got {firestore_type_name(data)}")
    fallback = mapping.get("fallback")
    if fallback is not None:
        fallback = check_document_id(fallback, "template.fallback", "template names")
    return TemplateRef(name=name, data=dict(data), fallback=fallback)


def _strict_map(value: object, field_name: str, allowed: tuple[str, ...]) -> Mapping:
    if not isinstance(value, Mapping):
        raise MailInputError(field_name, f"expected a map, got {firestore_type_name(value)}")
    for key in value:
        if key not in allowed:
            hint = f"unknown field; {field_name} accepts {', '.join(allowed)}"
            if field_name == "message" and key in _TOP_LEVEL_KEYS:
                hint = f"{key} belongs at the top level of the document, not inside message"
            raise MailInputError(member(field_name, key), hint)
    return value


def _fill_message(request: MailRequest, value: object) -> None:
    message = _strict_map(value, "message", MESSAGE_KEYS)
    subject = _optional_string(message, "subject")
    if subject is not None:
        check_subject(subject)
    request.subject = subject
    request.text = _optional_string(message, "text")
    request.html = _optional_string(message, "html")
    request.amp = _optional_string(message, "amp")
    attachments = message.get("attachments")
    if attachments is None:
        return
    if not isinstance(attachments, (list, tuple)):
        raise MailInputError("message.attachments", f"expected a list of maps, got {firestore_type_name(attachments)}")
    request.attachments = [
        _attachment(item, f"message.attachments[{index}]") for index, item in enumerate(attachments)
    ]


def _optional_string(message: Mapping, key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise MailInputError(f"message.{key}", f"expected a string, got {firestore_type_name(value)}")
    if value is not None and key != "subject":
        check_body(value, f"message.{key}")
    return value


def check_body(body: str, field_name: str) -> None:
    problem = text_problem(body)
    if problem:
        raise MailInputError(field_name, f"the body {problem}")


def check_subject(subject: str, field_name: str = "message.subject") -> None:
    problem = header_text_problem(subject)
    if problem:
        raise MailInputError(field_name, f"the subject {problem}")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise MailInputError(field_name, f"the subject must be at most {MAX_SUBJECT_CHARS} characters, this one has {len(subject)}")


def _attachment(value: object, field_name: str) -> Attachment:
    if isinstance(value, Mapping):
        for refused in ("path", "href"):
            if refused in value:
                raise MailInputError(
                    f"{field_name}.{refused}",
                    "attachments must carry inline content; path and href are refused because they would "
                    "let a document read the function's files or fetch internal URLs",
                )
    item = _strict_map(value, field_name, ATTACHMENT_KEYS)
    cid = _attachment_string(item, "cid", field_name)
    attachment = Attachment(
        filename=_attachment_string(item, "filename", field_name) or None,
        content=_attachment_content(item, field_name),
        content_type=_attachment_string(item, "contentType", field_name),
        cid=cid,
        disposition=_attachment_string(item, "contentDisposition", field_name),
    )
    if attachment.disposition is None:
        attachment.disposition = "inline" if cid else "attachment"
    check_attachment(attachment, field_name)
    return attachment


def _attachment_string(item: Mapping, key: str, field_name: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise MailInputError(f"{field_name}.{key}", f"expected a string, got {firestore_type_name(value)}")
    return value


def _attachment_content(item: Mapping, field_name: str) -> bytes:
    content = item.get("content")
    encoding = item.get("encoding")
    if content is None:
        raise MailInputError(f"{field_name}.content", "missing: attachments need inline content (a string or bytes)")
    if isinstance(content, (bytes, bytearray)):
        if encoding is not None:
            raise MailInputError(f"{field_name}.encoding", "encoding applies to string content only; this content is already bytes")
        return bytes(content)
    if not isinstance(content, str):
        raise MailInputError(f"{field_name}.content", f"expected a string or bytes, got {firestore_type_name(content)}")
    if encoding is not None and not isinstance(encoding, str):
        raise MailInputError(f"{field_name}.encoding", f"expected a string, got {firestore_type_name(encoding)}")
    return decode_content(content, encoding, f"{field_name}.content")


def decode_content(content: str, encoding: str | None, field_name: str) -> bytes:
    """Turn string content into bytes per nodemailer's `encoding` (base64, hex, utf-8 by default)."""
    name = (encoding or "utf-8").strip().lower()
    if name == "base64":
        # MIME-style line breaks are normal in base64 text; anything else must be the alphabet.
        compact = re.sub(r"\s+", "", content)
        if not compact.isascii():
            raise MailInputError(field_name, "not valid base64 (non-ASCII characters)")
        try:
            return base64.b64decode(compact, validate=True)
        except binascii.Error as error:
            raise MailInputError(field_name, f"not valid base64 ({error})") from None
    if name == "hex":
        try:
            return bytes.fromhex(content)
        except ValueError:
            raise MailInputError(field_name, "not valid hex (expected pairs of 0-9a-f digits)") from None
    if name in ("utf-8", "utf8"):
        problem = text_problem(content)
        if problem:
            raise MailInputError(field_name, f"text content {problem}")
        return content.encode("utf-8")
    field_of_encoding = field_name.rsplit(".", 1)[0] + ".encoding"
    raise MailInputError(field_of_encoding, f"unsupported encoding {shown(encoding or '')}; use base64, hex or utf-8")


def check_attachment(attachment: Attachment, field_name: str) -> None:
    """Checks that hold for every attachment, whether from a document or a rendered template."""
    if attachment.filename is not None:
        problem = header_text_problem(attachment.filename, file_name=True)
        if problem:
            raise MailInputError(f"{field_name}.filename", f"file names {problem}")
    if attachment.content_type is not None:
        parse_content_type(attachment.content_type, f"{field_name}.contentType")
    if attachment.cid is not None:
        check_cid(attachment.cid, f"{field_name}.cid")
    if attachment.disposition is not None and attachment.disposition not in _DISPOSITIONS:
        raise MailInputError(
            f"{field_name}.contentDisposition",
            f"expected \"attachment\" or \"inline\", got {shown(attachment.disposition)}",
        )


def parse_content_type(value: str, field_name: str) -> tuple[str, str, dict[str, str]]:
    """Split `type/subtype; name=value` into parts; refuse anything else and multipart types."""
    match = _CONTENT_TYPE.fullmatch(value)
    if not match:
        raise MailInputError(field_name, f"{shown(value)} is not a content type of the form type/subtype")
    problem = header_text_problem(value, file_name=True)  # a quoted parameter (name=) may hold anything but " and \
    if problem:
        raise MailInputError(field_name, f"content types {problem}")
    names = [match["maintype"], match["subtype"], *(param["name"] for param in _PARAM.finditer(match["params"]))]
    if any(len(name) > MAX_CONTENT_TYPE_NAME_CHARS for name in names):
        raise MailInputError(field_name, f"type, subtype and parameter names must be at most {MAX_CONTENT_TYPE_NAME_CHARS} characters (RFC 6838)")
    maintype = match["maintype"].lower()
    if maintype == "multipart":
        raise MailInputError(field_name, "multipart types cannot be attached; the function builds the message structure")
    params = {
        param["name"].lower(): param["token"] if param["token"] is not None else param["quoted"]
        for param in _PARAM.finditer(match["params"])
    }
    return maintype, match["subtype"].lower(), params


def check_cid(cid: str, field_name: str) -> None:
    bare = cid_value(cid)
    if not bare or not _CID.fullmatch(bare):
        raise MailInputError(field_name, f"{shown(cid)} is not a valid content id (printable ASCII without spaces or <>)")
    if len(bare) > MAX_CID_CHARS:
        raise MailInputError(field_name, f"content ids must be at most {MAX_CID_CHARS} characters")
    problem = header_text_problem(bare)
    if problem:
        raise MailInputError(field_name, f"content ids {problem}")


def cid_value(cid: str) -> str:
    """A cid without the optional surrounding <>; html refers to it as cid:<value>."""
    if cid.startswith("<") and cid.endswith(">"):
        return cid[1:-1]
    return cid

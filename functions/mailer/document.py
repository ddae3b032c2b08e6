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
from mailer.dsn import MAX_ENVID_CHARS, MAX_ORCPT_CHARS, NOTIFY_VALUES, RETURNS, DsnRequest, xtext

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
    # SendGrid acts on this header's JSON (its `to` list would mail addresses nobody counts or records):
    # the function builds it, validated, from the document's SendGrid fields.
    "x-smtpapi": "the function builds it from the document's categories and sendGrid fields (SendGrid only)",
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
    sendgrid: SendGridOptions | None = None  # categories and sendGrid.*: sent in X-SMTPAPI (SendGrid only)
    dsn: DsnRequest | None = None  # delivery status notifications asked of the SMTP server (RFC 3461)


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
            sendgrid=parse_sendgrid(data),
            dsn=parse_dsn(data.get("dsn")),
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
    problem = text_problem(value)  # a lone surrogate cannot be encoded (found by the fuzz test)
    if problem:
        raise MailInputError(field, f"{what} {problem}")
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


# -- SendGrid fields and dsn (issue 12 items 4 and 5) -----------------------------------------------
# The extension reads `categories` at the top level and the rest under `sendGrid` (its QueuePayload and
# zod schema): categories: string[]; sendGrid: {templateId, dynamicTemplateData, mailSettings,
# customArgs: {string: string}, ipPoolName}. It sends them through SendGrid's v3 Web API; this function
# speaks SMTP, so they travel in SendGrid's X-SMTPAPI header (compose.smtpapi_header), which can carry
# categories, unique_args, ip_pool and per-message filters but not dynamic templates.

SENDGRID_KEYS = ("templateId", "dynamicTemplateData", "mailSettings", "customArgs", "ipPoolName")
MAX_CATEGORIES = 10  # SendGrid: up to 10 categories per message
MAX_CATEGORY_CHARS = 255  # SendGrid v3 mail send: a category is at most 255 characters
MIN_IP_POOL_CHARS, MAX_IP_POOL_CHARS = 2, 64  # SendGrid v3 mail send: ip_pool_name
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_IP_POOL = re.compile(r"[\x21-\x7e]+")
_LEGACY_TEMPLATE_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NO_DYNAMIC_TEMPLATES = (
    "SendGrid's SMTP API (the X-SMTPAPI header this function uses) cannot send dynamic templates; only its "
    "v3 Web API can. Render the mail here instead (template {name, data} from TEMPLATES_COLLECTION)"
)
# mailSettings keys (as @sendgrid/mail takes them, camelCase, or as the v3 API spells them) -> SMTP filter.
_MAIL_SETTING_FILTERS = {
    "bypassListManagement": "bypass_list_management",
    "bypass_list_management": "bypass_list_management",
    "footer": "footer",
}
_MAIL_SETTINGS_NOT_OVER_SMTP = {
    "sandboxMode": "sandbox mode exists only in SendGrid's v3 Web API; over SMTP mail is always sent",
    "bypassSpamManagement": "the per-list bypass settings exist only in SendGrid's v3 Web API; over SMTP use bypassListManagement",
    "bypassBounceManagement": "the per-list bypass settings exist only in SendGrid's v3 Web API; over SMTP use bypassListManagement",
    "bypassUnsubscribeManagement": "the per-list bypass settings exist only in SendGrid's v3 Web API; over SMTP use bypassListManagement",
    "bcc": "SendGrid removed its bcc setting; use the document's bcc field",
    "spamCheck": "SendGrid's spam check setting is not carried by this function",
}
_MAIL_SETTINGS_NOT_OVER_SMTP.update({
    re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key): reason
    for key, reason in list(_MAIL_SETTINGS_NOT_OVER_SMTP.items())
})


@dataclass
class SendGridOptions:
    """What the document asks of SendGrid, validated; compose turns it into the X-SMTPAPI header."""

    fields: list[str]  # the document fields that asked for something, as errors name them
    categories: list[str] = field(default_factory=list)
    custom_args: dict[str, str] = field(default_factory=dict)  # -> unique_args
    ip_pool: str | None = None  # -> ip_pool
    filters: dict[str, dict] = field(default_factory=dict)  # -> filters: {name: {"settings": {...}}}


def parse_sendgrid(data: Mapping) -> SendGridOptions | None:
    """The document's top-level `categories` and its `sendGrid` map; None when neither asks for anything
    (null, an empty list or map: apps often write empty values for unused fields)."""
    options = SendGridOptions(fields=[])
    categories = data.get("categories")
    if categories is not None:
        options.categories = _categories(categories)
        if options.categories:
            options.fields.append("categories")
    value = data.get("sendGrid")
    if value is not None:
        mapping = _strict_map(value, "sendGrid", SENDGRID_KEYS)
        _sendgrid_template(mapping, options)
        custom_args = mapping.get("customArgs")
        if custom_args is not None:
            options.custom_args = _custom_args(custom_args)
            if options.custom_args:
                options.fields.append("sendGrid.customArgs")
        ip_pool = mapping.get("ipPoolName")
        if ip_pool is not None:
            options.ip_pool = _ip_pool(ip_pool)
            options.fields.append("sendGrid.ipPoolName")
        settings = mapping.get("mailSettings")
        if settings is not None:
            filters = _mail_settings(settings)
            if filters:
                options.filters.update(filters)
                options.fields.append("sendGrid.mailSettings")
    return options if options.fields else None


def _categories(value: object) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise MailInputError("categories", f"expected a list of strings, got {firestore_type_name(value)}")
    if len(value) > MAX_CATEGORIES:
        raise MailInputError("categories", f"SendGrid allows at most {MAX_CATEGORIES} categories per message, this list has {len(value)}")
    seen: set[str] = set()
    for index, category in enumerate(value):
        name = f"categories[{index}]"
        if not isinstance(category, str):
            raise MailInputError(name, f"expected a string, got {firestore_type_name(category)}")
        if not category.strip():
            raise MailInputError(name, "must not be empty")
        if not _PRINTABLE_ASCII.fullmatch(category):
            raise MailInputError(name, "SendGrid categories must be printable US-ASCII (no control or non-ASCII characters)")
        if len(category) > MAX_CATEGORY_CHARS:
            raise MailInputError(name, f"SendGrid categories are at most {MAX_CATEGORY_CHARS} characters, this one has {len(category)}")
        if category in seen:
            raise MailInputError(name, f"duplicate category {shown(category)}")
        seen.add(category)
    return list(value)


def _sendgrid_template(mapping: Mapping, options: SendGridOptions) -> None:
    template_id = mapping.get("templateId")
    if mapping.get("dynamicTemplateData") is not None:
        raise MailInputError("sendGrid.dynamicTemplateData", f"dynamic template data is only used by dynamic templates; {_NO_DYNAMIC_TEMPLATES}")
    if template_id is None:
        return
    if not isinstance(template_id, str):
        raise MailInputError("sendGrid.templateId", f"expected a string, got {firestore_type_name(template_id)}")
    if template_id.startswith("d-"):
        raise MailInputError("sendGrid.templateId", f"{shown(template_id)} is a dynamic template; {_NO_DYNAMIC_TEMPLATES}")
    if not _LEGACY_TEMPLATE_ID.fullmatch(template_id):
        raise MailInputError(
            "sendGrid.templateId",
            f"{shown(template_id)} is not a SendGrid legacy template id (a UUID such as 5997fcf6-2b9f-484d-acd5-7e9a99f0dc1f)",
        )
    # Legacy transactional templates are a per-message filter (SendGrid's "templates" setting).
    options.filters["templates"] = {"settings": {"enable": 1, "template_id": template_id}}
    options.fields.append("sendGrid.templateId")


def _json_text_problem(text: str) -> str | None:
    """Why a string cannot go into the X-SMTPAPI JSON (which escapes everything else safely)."""
    if _CONTROL_CHARS.search(text):
        return "must not contain CR, LF, NUL or other control characters"
    return text_problem(text)


def _custom_args(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise MailInputError("sendGrid.customArgs", f"expected a map of strings, got {firestore_type_name(value)}")
    args: dict[str, str] = {}
    for key, arg in value.items():
        name = member("sendGrid.customArgs", key)
        if not isinstance(key, str) or not key:
            raise MailInputError(name, "custom argument names must be non-empty strings")
        problem = _json_text_problem(key)
        if problem:
            raise MailInputError(name, f"custom argument names {problem}")
        if not isinstance(arg, str):
            # SendGrid: "only use strings"; other types give unintended results.
            raise MailInputError(name, f"SendGrid custom argument values must be strings, got {firestore_type_name(arg)}")
        problem = _json_text_problem(arg)
        if problem:
            raise MailInputError(name, f"custom argument values {problem}")
        args[key] = arg
    return args


def _ip_pool(value: object) -> str:
    if not isinstance(value, str):
        raise MailInputError("sendGrid.ipPoolName", f"expected a string, got {firestore_type_name(value)}")
    if not _IP_POOL.fullmatch(value):
        raise MailInputError("sendGrid.ipPoolName", "IP pool names are printable ASCII without spaces")
    if not MIN_IP_POOL_CHARS <= len(value) <= MAX_IP_POOL_CHARS:
        raise MailInputError("sendGrid.ipPoolName", f"SendGrid IP pool names are {MIN_IP_POOL_CHARS} to {MAX_IP_POOL_CHARS} characters, this one has {len(value)}")
    return value


def _mail_settings(value: object) -> dict[str, dict]:
    if not isinstance(value, Mapping):
        raise MailInputError("sendGrid.mailSettings", f"expected a map, got {firestore_type_name(value)}")
    filters: dict[str, dict] = {}
    for key, setting in value.items():
        name = member("sendGrid.mailSettings", key)
        if key in _MAIL_SETTINGS_NOT_OVER_SMTP:
            raise MailInputError(name, _MAIL_SETTINGS_NOT_OVER_SMTP[key])
        filter_name = _MAIL_SETTING_FILTERS.get(key) if isinstance(key, str) else None
        if filter_name is None:
            raise MailInputError(name, "unknown mail setting; over SMTP SendGrid takes bypassListManagement and footer")
        if filter_name in filters:
            raise MailInputError(name, f"set twice (as {filter_name} and in camelCase)")
        allowed = ("enable", "text", "html") if filter_name == "footer" else ("enable",)
        mapping = _strict_map(setting, name, allowed)
        enable = mapping.get("enable")
        if not isinstance(enable, bool):
            raise MailInputError(f"{name}.enable", f"expected true or false, got {firestore_type_name(enable)}")
        settings: dict[str, object] = {"enable": int(enable)}
        if filter_name == "footer":
            for part, smtp_key in (("text", "text/plain"), ("html", "text/html")):
                content = mapping.get(part)
                if content is None:
                    if enable:  # SendGrid: enabling a setting per message needs all its parameters
                        raise MailInputError(f"{name}.{part}", "missing: SendGrid needs both text and html to enable a footer per message")
                    continue
                if not isinstance(content, str):
                    raise MailInputError(f"{name}.{part}", f"expected a string, got {firestore_type_name(content)}")
                problem = text_problem(content)
                if problem:
                    raise MailInputError(f"{name}.{part}", f"the footer {problem}")
                settings[smtp_key] = content
        filters[filter_name] = {"settings": settings}
    return filters


def parse_dsn(value: object) -> DsnRequest | None:
    """The document's `dsn` (nodemailer's shape): {id, return, notify, recipient}, each optional."""
    if value is None:
        return None
    mapping = _strict_map(value, "dsn", ("id", "return", "notify", "recipient"))
    if not mapping:
        raise MailInputError("dsn", "empty: set at least one of id, return, notify, recipient")
    return DsnRequest(
        ret=_dsn_return(mapping.get("return")),
        envid=_dsn_id(mapping.get("id")),
        notify=_dsn_notify(mapping.get("notify")),
        orcpt=_dsn_recipient(mapping.get("recipient")),
    )


def _dsn_return(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in RETURNS:
        shown_value = shown(value) if isinstance(value, str) else firestore_type_name(value)
        raise MailInputError("dsn.return", f"expected \"headers\" or \"full\", got {shown_value}")
    return RETURNS[value.lower()]


def _dsn_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MailInputError("dsn.id", f"expected a string, got {firestore_type_name(value)}")
    if not value:
        raise MailInputError("dsn.id", "must not be empty")
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise MailInputError("dsn.id", "envelope ids are printable US-ASCII (RFC 3461 4.4)")
    if len(xtext(value)) > MAX_ENVID_CHARS:
        raise MailInputError("dsn.id", f"the envelope id is at most {MAX_ENVID_CHARS} characters once encoded (RFC 3461 4.4), this one is {len(xtext(value))}")
    return value


def _dsn_notify(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise MailInputError("dsn.notify", f"expected a list of strings or a string, got {firestore_type_name(value)}")
    chosen: set[str] = set()
    for item in items:
        if not isinstance(item, str) or item.lower() not in NOTIFY_VALUES:
            item_shown = shown(item) if isinstance(item, str) else firestore_type_name(item)
            raise MailInputError("dsn.notify", f"{item_shown} is not one of {', '.join(NOTIFY_VALUES)}")
        chosen.add(item.lower())
    if not chosen:
        raise MailInputError("dsn.notify", "must not be empty: set never, or one or more of success, failure, delay")
    if "never" in chosen and len(chosen) > 1:
        raise MailInputError("dsn.notify", "never cannot be combined with success, failure or delay (RFC 3461 4.1)")
    return tuple(item.upper() for item in NOTIFY_VALUES if item in chosen)


def _dsn_recipient(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        address = parse_mailbox(value, "dsn.recipient").wire_addr_spec()
    except AddressError as error:
        raise MailInputError(error.field, error.reason) from None
    if not address.isascii():
        raise MailInputError("dsn.recipient", "the original recipient is sent as an rfc822 address (RFC 3461 4.2), which must be ASCII")
    if len("rfc822;" + xtext(address)) > MAX_ORCPT_CHARS:
        raise MailInputError("dsn.recipient", f"the original recipient is at most {MAX_ORCPT_CHARS} characters once encoded (RFC 3461 4.2)")
    return address

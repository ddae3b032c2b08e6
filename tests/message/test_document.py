"""Mail document validation: documents as Firebase "Trigger Email" apps write them, and every refusal rule."""

import base64
from datetime import datetime, timezone

import pytest

from mailer.addresses import Mailbox
from mailer.document import Attachment, MailInputError, TemplateRef, parse_mail_document

PDF_BYTES = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"
MESSAGE = {"subject": "Hi", "text": "Hello"}


# --- documents shaped like the extension's README examples -------------------------------------


def test_extension_readme_document_with_to_and_message() -> None:
    request = parse_mail_document(
        {
            "to": "someone@example.com",
            "message": {
                "subject": "Hello from Firebase!",
                "text": "This is the plaintext section of the email body.",
                "html": "This is the <code>HTML</code> section of the email body.",
            },
        }
    )
    assert request.to == [Mailbox("", "someone@example.com")]
    assert request.subject == "Hello from Firebase!"
    assert request.text == "This is the plaintext section of the email body."
    assert request.html == "This is the <code>HTML</code> section of the email body."
    assert request.amp is None and request.attachments == [] and request.template is None


def test_extension_readme_document_with_uids_and_template() -> None:
    request = parse_mail_document(
        {"toUids": ["abc123"], "template": {"name": "following", "data": {"username": "ada", "name": "Ada Lovelace"}}}
    )
    assert request.to == [] and request.to_uids == ["abc123"]
    assert request.template == TemplateRef(name="following", data={"username": "ada", "name": "Ada Lovelace"}, fallback=None)
    assert request.subject is None and request.text is None


def test_extension_document_with_base64_attachment_and_all_address_fields() -> None:
    request = parse_mail_document(
        {
            "to": ["ada@example.com", "Bob <bob@example.com>"],
            "cc": "carol@example.com",
            "bcc": ["audit@example.com"],
            "ccUids": ["u1"],
            "bccUids": ["u2"],
            "from": "Shop <shop@example.com>",
            "replyTo": "support@example.com",
            "headers": {"X-Custom-Header": "value", "X-Priority": 1},
            "message": {
                "subject": "Your invoice",
                "html": "<p>Attached.</p>",
                "attachments": [
                    {"filename": "invoice.pdf", "content": base64.b64encode(PDF_BYTES).decode(), "encoding": "base64"}
                ],
            },
            # Apps keep their own data in the document; it must not get in the way.
            "createdAt": datetime(2024, 1, 1, tzinfo=timezone.utc),
            "delivery": {"state": "PENDING"},
            "orderId": 1234,
        }
    )
    assert request.to == [Mailbox("", "ada@example.com"), Mailbox("Bob", "bob@example.com")]
    assert request.cc == [Mailbox("", "carol@example.com")]
    assert request.bcc == [Mailbox("", "audit@example.com")]
    assert (request.cc_uids, request.bcc_uids) == (["u1"], ["u2"])
    assert request.from_ == Mailbox("Shop", "shop@example.com")
    assert request.reply_to == Mailbox("", "support@example.com")
    assert request.headers == {"X-Custom-Header": "value", "X-Priority": "1"}
    assert request.attachments == [
        Attachment(filename="invoice.pdf", content=PDF_BYTES, content_type=None, cid=None, disposition="attachment")
    ]


def test_message_and_template_together_and_template_fallback() -> None:
    request = parse_mail_document(
        {"to": "a@example.com", "message": {"subject": "S"}, "template": {"name": "welcome", "fallback": "default"}}
    )
    assert request.subject == "S"
    assert request.template == TemplateRef(name="welcome", data={}, fallback="default")


# --- accepted variations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attachment", "content"),
    [
        ({"content": "aGVs\r\nbG8=", "encoding": "base64"}, b"hello"),  # MIME-wrapped base64
        ({"content": "aGVsbG8=", "encoding": "Base64"}, b"hello"),
        ({"content": "68656c6c6f", "encoding": "hex"}, b"hello"),
        ({"content": "héllo"}, "héllo".encode()),
        ({"content": "héllo", "encoding": "UTF-8"}, "héllo".encode()),
        ({"content": "héllo", "encoding": "utf8"}, "héllo".encode()),
        ({"content": PDF_BYTES}, PDF_BYTES),  # Firestore bytes value
    ],
)
def test_attachment_content_is_decoded_per_encoding(attachment: dict, content: bytes) -> None:
    request = parse_mail_document({"to": "a@example.com", "message": {**MESSAGE, "attachments": [attachment]}})
    assert request.attachments[0].content == content


def test_attachment_disposition_defaults_inline_for_cid_and_keeps_explicit_value() -> None:
    request = parse_mail_document(
        {
            "to": "a@example.com",
            "message": {
                **MESSAGE,
                "attachments": [
                    {"content": "x", "cid": "logo@app"},
                    {"content": "x"},
                    {"content": "x", "cid": "pic", "contentDisposition": "attachment"},
                    {"content": "x", "filename": "", "contentType": "text/plain; charset=utf-8"},
                ],
            },
        }
    )
    assert [a.disposition for a in request.attachments] == ["inline", "attachment", "attachment", "attachment"]
    assert request.attachments[3].filename is None
    assert request.attachments[3].content_type == "text/plain; charset=utf-8"


def test_empty_strings_mean_not_set() -> None:
    request = parse_mail_document({"to": "a@example.com", "cc": "", "from": "", "replyTo": " ", "message": MESSAGE})
    assert request.cc == [] and request.from_ is None and request.reply_to is None


def test_header_numbers_become_strings() -> None:
    request = parse_mail_document({"to": "a@example.com", "headers": {"X-A": 5, "X-B": 1.5}, "message": MESSAGE})
    assert request.headers == {"X-A": "5", "X-B": "1.5"}


# --- refusals -----------------------------------------------------------------------------------

BASE = {"to": "a@example.com", "message": MESSAGE}


def with_message(**fields: object) -> dict:
    return {"to": "a@example.com", "message": {**MESSAGE, **fields}}


def with_attachment(**fields: object) -> dict:
    return with_message(attachments=[{"filename": "a.txt", "content": "x", **fields}])


PATH_REFUSAL = "path and href are refused because they would let a document read the function's files or fetch internal URLs"

REFUSED = [
    # recipients
    ({"message": MESSAGE}, "to", "no recipients: set to, cc, bcc or toUids/ccUids/bccUids"),
    ({"to": [], "cc": "", "toUids": [], "message": MESSAGE}, "to", "no recipients"),
    ({"to": 5, "message": MESSAGE}, "to", "expected a string or a list of strings, got number"),
    ({"cc": {"address": "a@example.com"}, "to": "b@example.com", "message": MESSAGE}, "cc", "got map"),
    ({"to": ["a@example.com", 7], "message": MESSAGE}, "to[1]", "expected a string, got number"),
    ({"to": ["a@example.com", "bob@"], "message": MESSAGE}, "to[1]", "'bob@' is not a valid email address"),
    ({"to": ["a@example.com", "a@x.com, b@y.com"], "message": MESSAGE}, "to[1]", "expected one address"),
    ({"to": "a@x.com\r\nBcc: evil@x.com", "message": MESSAGE}, "to", "CR, LF"),
    ({"bcc": ["ok@example.com", '"Ada\nBcc: evil@x.com" <a@x.com>'], "message": MESSAGE}, "bcc[1]", "CR, LF"),
    ({"toUids": "abc", "message": MESSAGE}, "toUids", "expected a list of user ids, got string"),
    ({"toUids": ["ok", ""], "message": MESSAGE}, "toUids[1]", "must not be empty"),
    ({"ccUids": [3], "message": MESSAGE}, "ccUids[0]", "got number"),
    ({"bccUids": ["../admins/x"], "message": MESSAGE}, "bccUids[0]", "must not contain '/'"),
    ({"toUids": [".."], "message": MESSAGE}, "toUids[0]", "not a valid document id"),
    ({"toUids": ["__name__"], "message": MESSAGE}, "toUids[0]", "not a valid document id"),
    # from / replyTo
    ({**BASE, "from": ["a@example.com"]}, "from", "expected a single address string, got array"),
    ({**BASE, "from": "a@example.com, b@example.com"}, "from", "expected one address"),
    ({**BASE, "from": "a@x.com <b@y.com>"}, "from", "display name contains '@'"),
    ({**BASE, "replyTo": "a@example.com\r\nBcc: evil@x.com"}, "replyTo", "CR, LF"),
    # message / template presence and shape
    ({"to": "a@example.com"}, "message", "no message and no template: set message {subject, text|html} or template {name, data}"),
    ({"to": "a@example.com", "message": "hi"}, "message", "expected a map, got string"),
    (with_message(htlm="<p>typo</p>"), "message.htlm", "unknown field; message accepts subject, text, html, amp, attachments"),
    (with_message(priority="high"), "message.priority", "unknown field"),
    (with_message(**{"from": "a@example.com"}), "message.from", "belongs at the top level of the document"),
    (with_message(text=5), "message.text", "expected a string, got number"),
    (with_message(html=["<p>"]), "message.html", "expected a string, got array"),
    (with_message(subject=True), "message.subject", "expected a string, got boolean"),
    (with_message(subject="Hi\r\nBcc: evil@x.com"), "message.subject", "CR, LF"),
    (with_message(subject="=?utf-8?q?x=0D=0ABcc:_e@x.com?="), "message.subject", "encoded-word"),
    ({"to": "a@example.com", "template": "welcome"}, "template", "expected a map, got string"),
    ({"to": "a@example.com", "template": {"data": {}}}, "template.name", "got null"),
    ({"to": "a@example.com", "template": {"name": ""}}, "template.name", "must not be empty"),
    ({"to": "a@example.com", "template": {"name": "a/b"}}, "template.name", "must not contain '/'"),
    ({"to": "a@example.com", "template": {"name": "w", "data": [1]}}, "template.data", "expected a map, got array"),
    ({"to": "a@example.com", "template": {"name": "w", "fallback": 3}}, "template.fallback", "got number"),
    ({"to": "a@example.com", "template": {"name": "w", "lang": "fr"}}, "template.lang", "template accepts name, data, fallback"),
    # headers
    ({**BASE, "headers": "X-A: 1"}, "headers", "expected a map of header names to values, got string"),
    ({**BASE, "headers": {"X-Campaign": "a\r\nBcc: evil@x.com"}}, "headers.X-Campaign", "header values must not contain CR, LF"),
    ({**BASE, "headers": {"X-Campaign": "a\x00b"}}, "headers.X-Campaign", "control characters"),
    ({**BASE, "headers": {"X-Campaign": "=?utf-8?q?a=0D=0ABcc:_e@x.com?="}}, "headers.X-Campaign", "encoded-word"),
    ({**BASE, "headers": {"X-A": {"v": 1}}}, "headers.X-A", "header values must be strings or numbers, got map"),
    ({**BASE, "headers": {"X-A": True}}, "headers.X-A", "got boolean"),
    ({**BASE, "headers": {"X-A": None}}, "headers.X-A", "got null"),
    ({**BASE, "headers": {"Bcc": "evil@x.com"}}, "headers.Bcc", "use the document's bcc field"),
    ({**BASE, "headers": {"bcc": "evil@x.com"}}, "headers.bcc", "use the document's bcc field"),
    ({**BASE, "headers": {"TO": "evil@x.com"}}, "headers.TO", "use the document's to field"),
    ({**BASE, "headers": {"Reply-To": "x@x.com"}}, "headers.Reply-To", "use the document's replyTo field"),
    ({**BASE, "headers": {"Subject": "x"}}, "headers.Subject", "use message.subject"),
    ({**BASE, "headers": {"Message-Id": "<x@y>"}}, "headers.Message-Id", "the function generates it"),
    ({**BASE, "headers": {"Content-Type": "text/html"}}, "headers.Content-Type", "set by the function"),
    ({**BASE, "headers": {"Return-Path": "<x@y.com>"}}, "headers.Return-Path", "envelope sender"),
    ({**BASE, "headers": {"Resent-To": "x@y.com"}}, "headers.Resent-To", "Resent-* headers"),
    ({**BASE, "headers": {"X Campaign": "1"}}, "headers['X Campaign']", "header names must be printable ASCII"),
    ({**BASE, "headers": {"X-Campaign:": "1"}}, "headers['X-Campaign:']", "header names must be printable ASCII"),
    ({**BASE, "headers": {"X-A\r\nBcc": "1"}}, "headers['X-A\\r\\nBcc']", "header names must be printable ASCII"),
    ({**BASE, "headers": {"X-Käse": "1"}}, "headers.X-Käse", "header names must be printable ASCII"),
    ({**BASE, "headers": {"X-" + "a" * 80: "1"}}, "headers.X-" + "a" * 80, "at most 76 characters"),
    ({**BASE, "headers": {"X-A": "1", "x-a": "2"}}, "headers.x-a", "duplicate of header X-A"),
    # attachments
    (with_message(attachments={"content": "x"}), "message.attachments", "expected a list of maps, got map"),
    (with_message(attachments=["x"]), "message.attachments[0]", "expected a map, got string"),
    (with_message(attachments=[{"filename": "passwd", "path": "/etc/passwd"}]), "message.attachments[0].path", PATH_REFUSAL),
    (with_message(attachments=[{"href": "http://169.254.169.254/computeMetadata/v1/"}]), "message.attachments[0].href", PATH_REFUSAL),
    (with_attachment(raw="Content-Type: text/plain\r\n\r\nx"), "message.attachments[0].raw", "unknown field; message.attachments[0] accepts filename, content, encoding, contentType, cid, contentDisposition"),
    (with_attachment(contentTransferEncoding="7bit"), "message.attachments[0].contentTransferEncoding", "unknown field"),
    (with_message(attachments=[{"filename": "a.txt"}]), "message.attachments[0].content", "missing"),
    (with_attachment(content=5), "message.attachments[0].content", "expected a string or bytes, got number"),
    (with_attachment(content="not base64!", encoding="base64"), "message.attachments[0].content", "not valid base64"),
    (with_attachment(content="aGVsbG8", encoding="base64"), "message.attachments[0].content", "not valid base64"),
    (with_attachment(content="aGVs*bG8=", encoding="base64"), "message.attachments[0].content", "not valid base64"),
    (with_attachment(content="zz", encoding="hex"), "message.attachments[0].content", "not valid hex"),
    (with_attachment(content="x", encoding="binary"), "message.attachments[0].encoding", "unsupported encoding 'binary'; use base64, hex or utf-8"),
    (with_attachment(content="x", encoding=7), "message.attachments[0].encoding", "expected a string, got number"),
    (with_attachment(content=b"x", encoding="base64"), "message.attachments[0].encoding", "string content only"),
    (with_attachment(filename="a\r\nBcc: evil@x.com"), "message.attachments[0].filename", "file names must not contain CR, LF"),
    (with_attachment(filename="=?utf-8?q?a=0D=0A?="), "message.attachments[0].filename", "encoded-word"),
    (with_attachment(filename=5), "message.attachments[0].filename", "expected a string, got number"),
    (with_attachment(contentType="pdf"), "message.attachments[0].contentType", "not a content type of the form type/subtype"),
    (with_attachment(contentType="text/plain\r\nBcc: evil@x.com"), "message.attachments[0].contentType", "type/subtype"),
    (with_attachment(contentType="multipart/mixed"), "message.attachments[0].contentType", "multipart types cannot be attached"),
    (with_attachment(cid="my logo"), "message.attachments[0].cid", "not a valid content id"),
    (with_attachment(cid="logo\r\nBcc: evil@x.com"), "message.attachments[0].cid", "not a valid content id"),
    (with_attachment(cid="x" * 201), "message.attachments[0].cid", "at most 200 characters"),
    (with_attachment(contentDisposition="attachment; filename=x"), "message.attachments[0].contentDisposition", 'expected "attachment" or "inline"'),
    # the document itself
    (["to", "a@example.com"], "document", "expected a map, got array"),
]


@pytest.mark.parametrize(("document", "field", "expected"), REFUSED)
def test_invalid_document_is_refused_naming_the_field(document: object, field: str, expected: str) -> None:
    with pytest.raises(MailInputError) as caught:
        parse_mail_document(document)  # type: ignore[arg-type]
    message = str(caught.value)
    assert caught.value.field == field
    assert message.startswith(field + ": ")
    assert expected in message
    assert "\n" not in message and "\r" not in message


def test_error_for_every_field_is_one_line_even_with_hostile_field_names() -> None:
    with pytest.raises(MailInputError) as caught:
        parse_mail_document({**BASE, "headers": {"X\r\nBcc: evil@x.com": "1"}})
    assert "\r" not in caught.value.field and "\n" not in caught.value.field
    assert str(caught.value).count("\n") == 0

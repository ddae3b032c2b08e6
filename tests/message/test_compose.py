"""Message composition: MIME structure, headers, envelope, encodings, limits; checked on the serialized bytes."""

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from mailer.addresses import Mailbox, parse_mailbox
from mailer.compose import ComposeDefaults, ComposedMail, compose
from mailer.document import Attachment, MailInputError, MailRequest, parse_mail_document

DEFAULTS = ComposeDefaults(
    default_from=parse_mailbox("App <app@example.com>", "DEFAULT_FROM"),
    default_reply_to=None,
    max_message_bytes=10 * 1024 * 1024,
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def compose_document(document: dict, defaults: ComposeDefaults = DEFAULTS, **options: str) -> ComposedMail:
    return compose(parse_mail_document(document), defaults, **options)


def wire(composed: ComposedMail) -> bytes:
    """The bytes a transport sends (before dot-stuffing)."""
    return composed.payload


def received(composed: ComposedMail) -> EmailMessage:
    """The message as a recipient's client parses it."""
    return email.message_from_bytes(wire(composed), policy=email.policy.default)


def header_section(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def structure(part: EmailMessage) -> object:
    """Content types as a nested list, so tests can compare whole trees."""
    if part.is_multipart():
        return [part.get_content_type(), [structure(child) for child in part.iter_parts()]]
    return part.get_content_type()


def request(**fields: object) -> MailRequest:
    """A final (templates resolved) request, as compose receives it."""
    values: dict = {"to": [Mailbox("", "ada@example.com")], "subject": "Hi", "text": "Hello"}
    values.update(fields)
    return MailRequest(**values)


# --- structure ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"subject": "S", "text": "t"}, "text/plain"),
        ({"subject": "S", "html": "<p>h</p>"}, "text/html"),
        ({"subject": "S", "text": "t", "html": "<p>h</p>"}, ["multipart/alternative", ["text/plain", "text/html"]]),
        (
            {"subject": "S", "html": "<p>h</p>", "amp": "<html amp4email></html>", "text": "t"},
            ["multipart/alternative", ["text/plain", "text/x-amp-html", "text/html"]],
        ),
        (
            {"subject": "S", "html": '<img src="cid:logo@app">', "attachments": [{"filename": "logo.png", "content": PNG, "cid": "logo@app"}]},
            ["multipart/related", ["text/html", "image/png"]],
        ),
        (
            {
                "subject": "S",
                "text": "t",
                "html": '<img src="cid:logo@app">',
                "attachments": [
                    {"filename": "logo.png", "content": PNG, "cid": "logo@app"},
                    {"filename": "invoice.pdf", "content": b"%PDF"},
                ],
            },
            ["multipart/mixed", [["multipart/alternative", ["text/plain", ["multipart/related", ["text/html", "image/png"]]]], "application/pdf"]],
        ),
        (
            # An explicit "attachment" disposition keeps a cid part out of multipart/related.
            {"subject": "S", "html": "<p>h</p>", "attachments": [{"filename": "logo.png", "content": PNG, "cid": "x", "contentDisposition": "attachment"}]},
            ["multipart/mixed", ["text/html", "image/png"]],
        ),
        (
            # Without html there is nothing to relate an inline image to.
            {"subject": "S", "text": "t", "attachments": [{"filename": "logo.png", "content": PNG, "cid": "x"}]},
            ["multipart/mixed", ["text/plain", "image/png"]],
        ),
    ],
)
def test_mime_structure(message: dict, expected: object) -> None:
    assert structure(received(compose_document({"to": "ada@example.com", "message": message}))) == expected


def test_related_part_names_its_root_type_and_inline_image_keeps_cid() -> None:
    composed = compose_document(
        {"to": "ada@example.com", "message": {"subject": "S", "html": '<img src="cid:logo@app">', "attachments": [{"filename": "logo.png", "content": PNG, "cid": "<logo@app>"}]}}
    )
    parsed = received(composed)
    assert parsed.get_param("type") == "text/html"
    image = list(parsed.iter_parts())[1]
    assert image["Content-ID"] == "<logo@app>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG


def test_attachment_from_template_without_disposition_follows_the_cid_default() -> None:
    attachment = Attachment(filename="logo.png", content=PNG, content_type=None, cid="logo", disposition=None)
    composed = compose(request(text=None, html="<img src=cid:logo>", attachments=[attachment]), DEFAULTS)
    assert structure(received(composed)) == ["multipart/related", ["text/html", "image/png"]]


def test_attachment_content_types_given_guessed_or_octet_stream() -> None:
    composed = compose_document(
        {
            "to": "ada@example.com",
            "message": {
                "subject": "S",
                "text": "t",
                "attachments": [
                    {"filename": "notes.txt", "content": "héllo", "contentType": "text/plain; charset=utf-8"},
                    {"filename": "report.pdf", "content": "JVBERg==", "encoding": "base64"},
                    {"filename": "blob.unknownext", "content": b"\x00\x01"},
                    {"content": b"\x02"},
                ],
            },
        }
    )
    parts = list(received(composed).iter_attachments())
    assert [part.get_content_type() for part in parts] == ["text/plain", "application/pdf", "application/octet-stream", "application/octet-stream"]
    assert parts[0].get_param("charset") == "utf-8"
    assert parts[0].get_content() == "héllo"
    assert parts[1].get_content() == b"%PDF"
    assert parts[2].get_content() == b"\x00\x01"


# --- headers and envelope -----------------------------------------------------------------------


def test_headers_envelope_and_bcc_only_in_envelope() -> None:
    composed = compose_document(
        {
            "to": "Ada <ada@example.com>",
            "cc": ["carol@example.com"],
            "bcc": "secret-auditor@example.org",
            "from": "Shop <shop@example.com>",
            "replyTo": "support@example.com",
            "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:unsub@example.com>", "X-Priority": 1},
            "message": {"subject": "Hi", "text": "t"},
        }
    )
    raw = wire(composed)
    parsed = received(composed)
    assert composed.recipients == ["ada@example.com", "carol@example.com", "secret-auditor@example.org"]
    assert composed.envelope_from == "shop@example.com"
    assert b"secret-auditor" not in raw
    assert parsed["Bcc"] is None
    assert str(parsed["From"]) == "Shop <shop@example.com>"
    assert str(parsed["To"]) == "Ada <ada@example.com>"
    assert str(parsed["Cc"]) == "carol@example.com"
    assert str(parsed["Reply-To"]) == "support@example.com"
    assert parsed["Subject"] == "Hi"
    assert parsed["MIME-Version"] == "1.0"
    assert (parsed["X-Campaign"], parsed["List-Unsubscribe"], parsed["X-Priority"]) == ("spring", "<mailto:unsub@example.com>", "1")
    names = [name for name in parsed.keys()]
    assert names[:8] == ["From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version"]


def test_date_is_utc_and_message_id_uses_the_sender_domain() -> None:
    composed = compose_document({"to": "ada@example.com", "from": "shop@Bücher.de", "message": {"subject": "S", "text": "t"}})
    parsed = received(composed)
    assert parsedate_to_datetime(parsed["Date"]).utcoffset().total_seconds() == 0
    assert parsed["Message-ID"] == composed.message_id
    assert re.fullmatch(r"<[^<>@\s]+@xn--bcher-kva\.de>", composed.message_id)


def test_message_id_domain_option_and_its_validation() -> None:
    composed = compose_document({"to": "ada@example.com", "message": {"subject": "S", "text": "t"}}, message_id_domain="mail.example.net")
    assert composed.message_id.endswith("@mail.example.net>")
    with pytest.raises(ValueError, match="^message_id_domain: "):
        compose_document({"to": "ada@example.com", "message": {"subject": "S", "text": "t"}}, message_id_domain="x>\r\nBcc: e@x.com")


def test_message_ids_differ_between_messages() -> None:
    document = {"to": "ada@example.com", "message": {"subject": "S", "text": "t"}}
    assert compose_document(document).message_id != compose_document(document).message_id


def test_duplicate_recipients_are_sent_once_in_first_seen_order() -> None:
    composed = compose_document(
        {
            "to": ["b@example.com", "a@example.com"],
            "cc": "A <a@example.com>, c@example.com",
            "bcc": ["b@example.com", "d@example.com", "c@example.com"],
            "message": {"subject": "S", "text": "t"},
        }
    )
    assert composed.recipients == ["b@example.com", "a@example.com", "c@example.com", "d@example.com"]


def test_quoted_address_lookalike_reaches_only_the_real_address() -> None:
    composed = compose_document({"to": '"a@x.com" <b@y.com>', "message": {"subject": "S", "text": "t"}})
    to = received(composed)["To"]
    assert composed.recipients == ["b@y.com"]
    assert [(a.display_name, a.addr_spec) for a in to.addresses] == [("a@x.com", "b@y.com")]


def test_defaults_fill_from_and_reply_to_and_document_values_win() -> None:
    defaults = ComposeDefaults(
        default_from=parse_mailbox("App <app@example.com>", "DEFAULT_FROM"),
        default_reply_to=parse_mailbox("help@example.com", "DEFAULT_REPLY_TO"),
        max_message_bytes=1_000_000,
    )
    from_defaults = received(compose_document({"to": "ada@example.com", "message": {"subject": "S", "text": "t"}}, defaults))
    assert (str(from_defaults["From"]), str(from_defaults["Reply-To"])) == ("App <app@example.com>", "help@example.com")
    own = received(
        compose_document({"to": "ada@example.com", "from": "me@example.org", "replyTo": "r@example.org", "message": {"subject": "S", "text": "t"}}, defaults)
    )
    assert (str(own["From"]), str(own["Reply-To"])) == ("me@example.org", "r@example.org")


def test_no_reply_to_header_without_one() -> None:
    assert received(compose_document({"to": "ada@example.com", "message": {"subject": "S", "text": "t"}}))["Reply-To"] is None


# --- international text -------------------------------------------------------------------------


def test_non_ascii_subject_names_and_filename_round_trip_over_an_ascii_wire() -> None:
    subject = "Grüße aus Köln 🎉 — " + "lange Betreffzeile " * 8
    composed = compose_document(
        {
            "to": "Zoë Ünal <zoe@example.com>",
            "from": '"Bäckerei Müller, Köln" <shop@example.com>',
            "message": {
                "subject": subject,
                "text": "Grüße",
                "html": "<p>Grüße</p>",
                "attachments": [{"filename": "résumé €.pdf", "content": b"%PDF"}],
            },
        }
    )
    raw = wire(composed)
    parsed = received(composed)
    assert composed.smtputf8 is False
    assert raw.isascii()
    assert b"filename*=" in raw  # RFC 2231
    assert parsed["Subject"] == subject
    assert parsed["To"].addresses[0].display_name == "Zoë Ünal"
    assert parsed["From"].addresses[0].display_name == "Bäckerei Müller, Köln"
    assert next(parsed.iter_attachments()).get_filename() == "résumé €.pdf"
    assert parsed.get_body(("plain",)).get_content().rstrip("\r\n") == "Grüße"
    assert parsed.get_body(("html",)).get_content().rstrip("\r\n") == "<p>Grüße</p>"


def test_idn_domain_goes_out_as_ascii_without_smtputf8() -> None:
    composed = compose_document({"to": "Zoë <zoe@bücher.de>", "message": {"subject": "S", "text": "t"}})
    assert composed.smtputf8 is False
    assert composed.recipients == ["zoe@xn--bcher-kva.de"]
    assert received(composed)["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.de"


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "from", "replyTo"])
def test_non_ascii_local_part_anywhere_sets_smtputf8(field: str) -> None:
    document = {"to": "ada@example.com", "message": {"subject": "S", "text": "t"}, field: "jörg@bücher.de"}
    composed = compose_document(document)
    assert composed.smtputf8 is True
    assert composed.message.policy.utf8 is True
    if field in ("to", "cc", "bcc"):
        assert "jörg@bücher.de" in composed.recipients
    if field in ("to", "cc", "from", "replyTo"):
        assert "jörg@bücher.de".encode() in header_section(wire(composed))


def test_ascii_only_addresses_do_not_set_smtputf8() -> None:
    assert compose_document({"to": "ada@example.com", "message": {"subject": "Grüße", "text": "t"}}).smtputf8 is False


# --- wire format --------------------------------------------------------------------------------


def test_long_lines_are_wrapped_by_transfer_encoding_and_lines_end_in_crlf() -> None:
    html = "<p>" + "x" * 5000 + "</p>"
    text = "ä" * 3000
    composed = compose_document({"to": "ada@example.com", "headers": {"X-Long": "y" * 2000}, "message": {"subject": "s " * 600, "text": text, "html": html}})
    raw = wire(composed)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    parsed = received(composed)
    assert parsed.get_body(("html",)).get_content().rstrip("\r\n") == html
    assert parsed.get_body(("plain",)).get_content().rstrip("\r\n") == text
    assert parsed["X-Long"] == "y" * 2000


def test_plain_ascii_body_stays_readable_7bit() -> None:
    parsed = received(compose_document({"to": "ada@example.com", "message": {"subject": "S", "text": "Hello\nthere"}}))
    assert parsed["Content-Transfer-Encoding"] == "7bit"


def test_non_ascii_body_avoids_8bit_transfer() -> None:
    composed = compose_document({"to": "ada@example.com", "message": {"subject": "S", "text": "Grüße"}})
    assert received(composed)["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert wire(composed).isascii()


def test_oversize_message_is_refused_with_both_numbers() -> None:
    document = {"to": "ada@example.com", "message": {"subject": "S", "text": "t", "attachments": [{"filename": "big.bin", "content": bytes(100_000)}]}}
    small = ComposeDefaults(default_from=DEFAULTS.default_from, default_reply_to=None, max_message_bytes=50_000)
    with pytest.raises(MailInputError) as caught:
        compose_document(document, small)
    assert caught.value.field == "message"
    assert re.fullmatch(r"message: message is \d+ bytes, over the limit of 50000 bytes \(MAX_MESSAGE_BYTES\)", str(caught.value))
    size = int(re.search(r"is (\d+) bytes", str(caught.value)).group(1))
    assert size > 100_000 * 4 // 3  # base64 of the attachment alone
    assert compose_document(document).message is not None  # fits the default limit


# --- refusals at compose time (after templates) ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "expected"),
    [
        ({"to": [], "to_uids": ["u1"]}, "to", "no recipients"),
        ({"subject": None}, "message.subject", "missing subject"),
        ({"subject": "  "}, "message.subject", "missing subject"),
        ({"text": None}, "message.text", "no body: set message.text or message.html"),
        ({"text": ""}, "message.text", "no body"),
        ({"text": None, "amp": "<html amp4email></html>"}, "message.html", "an AMP body needs a text or html fallback"),
        # Template output is checked again: it never went through parse_mail_document.
        ({"subject": "Hi\r\nBcc: evil@x.com"}, "message.subject", "CR, LF"),
        ({"subject": "=?utf-8?q?x=0D=0ABcc:_evil@x.com?="}, "message.subject", "encoded-word"),
        ({"headers": {"X-A": "1\r\nBcc: evil@x.com"}}, "headers.X-A", "CR, LF"),
        ({"headers": {"Bcc": "evil@x.com"}}, "headers.Bcc", "bcc field"),
        ({"attachments": [Attachment("a\r\nBcc: e@x.com", b"x", None, None, None)]}, "message.attachments[0].filename", "CR, LF"),
        ({"attachments": [Attachment("a.txt", b"x", "text/plain\nX: y", None, None)]}, "message.attachments[0].contentType", "type/subtype"),
        ({"attachments": [Attachment("a.txt", b"x", None, "a b", None)]}, "message.attachments[0].cid", "not a valid content id"),
        ({"attachments": [Attachment("a.txt", b"x", None, None, "form-data")]}, "message.attachments[0].contentDisposition", "expected"),
    ],
)
def test_compose_refuses_requests_it_cannot_send(fields: dict, field: str, expected: str) -> None:
    with pytest.raises(MailInputError) as caught:
        compose(request(**fields), DEFAULTS)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ": ")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_sender_is_refused() -> None:
    no_default = ComposeDefaults(default_from=None, default_reply_to=None, max_message_bytes=1_000_000)
    with pytest.raises(MailInputError) as caught:
        compose(request(), no_default)
    assert str(caught.value) == "from: no sender: set from in the document or DEFAULT_FROM in the function's configuration"
    assert compose(request(from_=Mailbox("", "me@example.com")), no_default).envelope_from == "me@example.com"


def test_payload_is_the_message_serialized_once_and_message_parses_it() -> None:
    composed = compose(request(bcc=[Mailbox("", "hidden@example.org")]), DEFAULTS)
    assert isinstance(composed.payload, bytes)
    assert composed.payload.startswith(b"From: App <app@example.com>\r\nTo: ada@example.com\r\n")
    assert b"hidden@example.org" not in composed.payload and "hidden@example.org" in composed.recipients
    assert composed.message is composed.message  # parsed once, on first use
    assert composed.message["Message-ID"] == composed.message_id
    assert composed.message.policy.linesep == "\r\n"


def test_attachment_bytes_survive_base64_transfer() -> None:
    payload = bytes(range(256)) * 10
    composed = compose_document(
        {"to": "ada@example.com", "message": {"subject": "S", "text": "t", "attachments": [{"filename": "d.bin", "content": base64.b64encode(payload).decode(), "encoding": "base64"}]}}
    )
    assert next(received(composed).iter_attachments()).get_content() == payload

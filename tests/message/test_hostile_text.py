"""Text that displays as something else, text that is not text, and sizes: bidirectional controls,
lone surrogates, and the bounds on subjects, header values and display names (issue 13)."""

from __future__ import annotations

import pytest

from mailer.addresses import Mailbox
from mailer.compose import ComposeDefaults, compose
from mailer.document import (
    MAX_HEADER_VALUE_CHARS,
    MAX_SUBJECT_CHARS,
    MailInputError,
    MailRequest,
    parse_mail_document,
)
from mailer.addresses import MAX_DISPLAY_NAME_CHARS
from mailer.prepare import Lookups, Refusal, prepare
from mailer.settings import Settings
from mailer.templates import Template, parse_template_document

SETTINGS = Settings(None, default_from="App <app@example.com>")
DEFAULTS = ComposeDefaults(default_from=Mailbox("App", "app@example.com"), default_reply_to=None, max_message_bytes=10 * 1024 * 1024)
MESSAGE = {"subject": "Hi", "text": "Hello"}
BASE = {"to": "ada@example.com", "message": MESSAGE}
RLO = "\u202e"
BIDI_CONTROLS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
BIDI_MARKS = ["\u200e", "\u200f", "\u061c"]
DISPLAY_ORDER = "which can make text display in a different order than it is written"


def refusal(document: dict) -> str:
    with pytest.raises(Refusal) as caught:
        prepare(document, SETTINGS)
    return str(caught.value)


def attachment(**fields: object) -> dict:
    return {**BASE, "message": {**MESSAGE, "attachments": [{"content": "x", **fields}]}}


# --- bidirectional controls ---------------------------------------------------------------------


@pytest.mark.parametrize("char", BIDI_CONTROLS)
def test_a_file_name_with_a_bidi_control_is_refused_naming_the_attachment(char: str) -> None:
    reason = refusal(attachment(filename=f"invoice{char}gnp.exe"))
    code = f"U+{ord(char):04X}"
    assert reason == (
        f"message.attachments[0].filename: file names must not contain bidirectional control characters ({code}), "
        "which can disguise a file name as another"
    )


@pytest.mark.parametrize("char", BIDI_MARKS)
def test_a_file_name_with_a_bidi_mark_is_refused_too(char: str) -> None:
    assert refusal(attachment(filename=f"report{char}.pdf")).startswith(
        f"message.attachments[0].filename: file names must not contain bidirectional control characters (U+{ord(char):04X})"
    )


def test_a_content_type_name_parameter_with_a_bidi_control_is_refused() -> None:
    reason = refusal(attachment(contentType=f'application/pdf; name="invoice{RLO}gnp.exe"'))
    assert reason.startswith("message.attachments[0].contentType: content types must not contain bidirectional control characters (U+202E)")


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "from", "replyTo"])
@pytest.mark.parametrize("entry", [f"Support{RLO} <ada@example.com>", f'"Bank \u2067Support\u2069" <ada@example.com>'])
def test_a_display_name_with_a_bidi_control_is_refused_naming_the_field(field: str, entry: str) -> None:
    reason = refusal({**BASE, field: entry})
    assert reason.startswith(f"{field}: addresses must not contain bidirectional control characters (U+")
    assert reason.endswith(DISPLAY_ORDER)


def test_a_display_name_in_a_list_names_its_index() -> None:
    reason = refusal({**BASE, "to": ["ada@example.com", f"Bo{RLO}b <bob@example.com>"]})
    assert reason == f"to[1]: addresses must not contain bidirectional control characters (U+202E), {DISPLAY_ORDER}"


def test_a_subject_with_bidi_controls_is_refused_listing_each_once() -> None:
    reason = refusal({**BASE, "message": {**MESSAGE, "subject": f"Your {RLO}order\u2066 {RLO}x\u2069"}})
    assert reason == (
        f"message.subject: the subject must not contain bidirectional control characters (U+202E, U+2066, U+2069), {DISPLAY_ORDER}"
    )


def test_a_header_value_with_a_bidi_control_is_refused_naming_the_header() -> None:
    reason = refusal({**BASE, "headers": {"X-Tag": f"a{RLO}b"}})
    assert reason == f"headers.X-Tag: header values must not contain bidirectional control characters (U+202E), {DISPLAY_ORDER}"


@pytest.mark.parametrize("mark", BIDI_MARKS)
def test_bidi_marks_are_allowed_in_subjects_display_names_and_header_values(mark: str) -> None:
    """Right-to-left text uses the marks to place neutral characters; they cannot reverse a run."""
    document = {
        "to": f'"\u05e9\u05dc\u05d5\u05dd{mark} Ada" <ada@example.com>',
        "headers": {"X-Tag": f"\u05e9\u05dc\u05d5\u05dd{mark} 1"},
        "message": {"subject": f"\u05e9\u05dc\u05d5\u05dd{mark} (2)", "text": "Hello"},
    }
    composed = prepare(document, SETTINGS).mail
    assert composed.message["Subject"] == f"\u05e9\u05dc\u05d5\u05dd{mark} (2)"


def test_compose_refuses_a_bidi_control_in_a_request_not_from_a_document() -> None:
    request = MailRequest(to=[Mailbox("", "ada@example.com")], subject=f"a{RLO}b", text="x")
    with pytest.raises(MailInputError, match=r"^message\.subject: the subject must not contain bidirectional"):
        compose(request, DEFAULTS)
    request = MailRequest(to=[Mailbox("", "ada@example.com")], subject="s", text="x", headers={"X-A": f"{RLO}"})
    with pytest.raises(MailInputError, match=r"^headers\.X-A: header values must not contain bidirectional"):
        compose(request, DEFAULTS)
    with pytest.raises(Exception, match="display names must not contain bidirectional"):
        Mailbox(f"a{RLO}", "ada@example.com")


class OneTemplate:
    """A template store holding one template document."""

    def __init__(self, **fields: object) -> None:
        self._template = Template(parse_template_document("Receipt", fields, "collection 'mail-templates'"))

    def template(self, ref: object) -> Template:
        return self._template


def test_a_template_that_renders_a_bidi_subject_is_refused_naming_the_template() -> None:
    document = {"to": "ada@example.com", "template": {"name": "Receipt", "data": {"item": f"invoice{RLO}gnp.exe"}}}
    lookups = Lookups(templates=OneTemplate(subject="Your {{item}}", text="Hello"))  # type: ignore[arg-type]
    with pytest.raises(Refusal) as caught:
        prepare(document, SETTINGS, lookups)
    assert str(caught.value) == (
        "template: 'Receipt' in collection 'mail-templates' rendered an invalid message.subject: the subject must not "
        f"contain bidirectional control characters (U+202E), {DISPLAY_ORDER}"
    )


def test_a_template_that_renders_a_bidi_file_name_is_refused_naming_the_template() -> None:
    document = {"to": "ada@example.com", "template": {"name": "Receipt", "data": {"name": f"invoice{RLO}gnp.exe"}}}
    store = OneTemplate(subject="Hi", text="Hello", attachments=[{"filename": "{{name}}", "content": "x"}])
    with pytest.raises(Refusal) as caught:
        prepare(document, SETTINGS, Lookups(templates=store))  # type: ignore[arg-type]
    assert str(caught.value).startswith(
        "template: 'Receipt' in collection 'mail-templates' rendered an invalid message.attachments[0].filename: "
        "file names must not contain bidirectional control characters (U+202E)"
    )


# --- sizes --------------------------------------------------------------------------------------


def test_a_one_megabyte_subject_is_refused() -> None:
    reason = refusal({**BASE, "message": {**MESSAGE, "subject": "a" * 1_000_000}})
    assert reason == "message.subject: the subject must be at most 2000 characters, this one has 1000000"


def test_the_subject_limit_is_inclusive_and_counts_characters_not_bytes() -> None:
    assert MAX_SUBJECT_CHARS == 2000
    subject = "ü" * MAX_SUBJECT_CHARS
    assert prepare({**BASE, "message": {**MESSAGE, "subject": subject}}, SETTINGS).mail.message["Subject"] == subject
    assert refusal({**BASE, "message": {**MESSAGE, "subject": subject + "x"}}).startswith("message.subject: the subject must be at most 2000")


def test_the_header_value_limit() -> None:
    assert MAX_HEADER_VALUE_CHARS == 2000
    value = "v " * (MAX_HEADER_VALUE_CHARS // 2)
    prepare({**BASE, "headers": {"X-Long": value}}, SETTINGS)
    assert refusal({**BASE, "headers": {"X-Long": value + "w"}}) == (
        "headers.X-Long: header values must be at most 2000 characters, this one has 2001"
    )


@pytest.mark.parametrize("field", ["to", "cc", "bcc", "from", "replyTo"])
def test_the_display_name_limit(field: str) -> None:
    assert MAX_DISPLAY_NAME_CHARS == 256
    name = "N" * MAX_DISPLAY_NAME_CHARS
    prepare({**BASE, field: f"{name} <bob@example.com>"}, SETTINGS)
    assert refusal({**BASE, field: f'"{name}x" <bob@example.com>'}) == (
        f"{field}: display names must be at most 256 characters, this one has 257"
    )


def test_the_display_name_limit_in_a_comma_separated_list_says_which_address() -> None:
    reason = refusal({**BASE, "to": "ada@example.com, " + "N" * 300 + " <bob@example.com>"})
    assert reason == "to: display names must be at most 256 characters, this one has 300 (address 2 of the comma-separated list)"


# --- text that is not text ----------------------------------------------------------------------

SURROGATE = "lone surrogates (U+D800 to U+DFFF), which are not Unicode text and cannot be encoded"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({**BASE, "message": {"subject": "a\ud800", "text": "x"}}, f"message.subject: the subject must not contain {SURROGATE}"),
        ({**BASE, "message": {"subject": "s", "text": "x\udfff"}}, f"message.text: the body must not contain {SURROGATE}"),
        ({**BASE, "message": {"subject": "s", "html": "<p>\ud800</p>"}}, f"message.html: the body must not contain {SURROGATE}"),
        (attachment(content="\ud800"), f"message.attachments[0].content: text content must not contain {SURROGATE}"),
        (attachment(filename="a\ud800.pdf"), f"message.attachments[0].filename: file names must not contain {SURROGATE}"),
        ({**BASE, "to": "A\ud800 <a@example.com>"}, f"to: addresses must not contain {SURROGATE}"),
        ({**BASE, "headers": {"X-A": "\ud800"}}, f"headers.X-A: header values must not contain {SURROGATE}"),
        (attachment(content="aGVsbG8é", encoding="base64"), "message.attachments[0].content: not valid base64 (non-ASCII characters)"),
    ],
)
def test_text_that_cannot_be_encoded_is_refused_naming_the_field(document: dict, expected: str) -> None:
    assert refusal(document) == expected


def test_non_characters_are_text_and_are_sent() -> None:
    composed = prepare({**BASE, "message": {"subject": "a\ufffe\ufdd0b", "text": "x\uffff"}}, SETTINGS).mail
    assert composed.message["Subject"] == "a\ufffe\ufdd0b"


# --- field names stay unambiguous ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({**BASE, "headers": {"X: Y": "1"}}, "headers['X: Y']"),
        ({**BASE, "message": {**MESSAGE, "to x": "1"}}, "message['to x']"),
        ({**BASE, "message": {**MESSAGE, 5: "1"}}, "message[5]"),
        ({**BASE, "message": {**MESSAGE, "attachments": [{"content": "x", "a\u202eb": 1}]}}, "message.attachments[0]['a\\u202eb']"),
    ],
)
def test_a_key_that_would_make_the_field_name_ambiguous_is_quoted(document: dict, field: str) -> None:
    with pytest.raises(MailInputError) as caught:
        parse_mail_document(document)
    assert caught.value.field == field

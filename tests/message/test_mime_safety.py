"""Header safety by construction, checked from the outside: compose() no longer re-parses its output,
so these tests do, for many hostile inputs the validators accept (quotes, backslashes, commas, colons,
angle brackets, tabs, header-like text, boundary-like text, non-ASCII, very long values).

For each message the payload is parsed with the stdlib parser as a recipient's client would, and the
header fields of every part must be exactly the intended ones, in order, with the intended values;
Bcc must be absent; lines end in CRLF and are at most 998 octets; a 7-bit message is ASCII.
"""

from __future__ import annotations

import email
import email.policy
import random
import re
from email.errors import NonASCIILocalPartDefect
from email.message import EmailMessage

import pytest

from mailer import mime
from mailer.addresses import Mailbox, header_text_problem
from mailer.compose import ComposeDefaults, ComposedMail, compose
from mailer.document import Attachment, MailInputError, MailRequest, parse_mail_document

DEFAULTS = ComposeDefaults(default_from=Mailbox("App", "app@example.com"), default_reply_to=None, max_message_bytes=10 * 1024 * 1024)

HOSTILE = [
    "Bcc: evil@example.org",
    "x\tBcc: evil@example.org",
    '"quoted" \\ back\\slash',
    "a, b; c: d <e@f.org> (comment) [x]",
    "--=_0123456789abcdef01234567",
    "-- ",
    ".",
    "=? not an encoded word",
    "ends with =?",
    "Grüße aus Köln",
    "中文主题 🎉",
    "\u00a0nbsp\u00a0",
    "a\u0301 combining",
    "   leading spaces",
    "tab\there",
    "x" * 1200,
    "word " * 300,
    "ü" * 700,
    "From: app@example.com",
    "Content-Type: text/html",
    "MIME-Version: 2.0",
]
ALPHABET = list("abcXYZ019 \t\"\\,;:<>()[]@.=?-_'!#%&*+/^`{|}~") + list("éßü中🎉\u00a0")


def hostile_text(rng: random.Random, *, allow_empty: bool = False) -> str:
    while True:
        choice = rng.random()
        if choice < 0.4:
            text = rng.choice(HOSTILE)
        elif choice < 0.8:
            text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 120)))
        else:
            text = rng.choice(HOSTILE) + " " + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
        if header_text_problem(text) is None and (allow_empty or text.strip()):
            return text


def hostile_mailbox(rng: random.Random) -> Mailbox:
    local = rng.choice(["ada", "a.b+tag", "o'brien", "x_y-z", "jörg", "ünal"])
    domain = rng.choice(["example.com", "bücher.de", "sub.example.org"])
    name = rng.choice(["", hostile_text(rng)])
    return Mailbox(name, f"{local}{rng.randint(0, 9999)}@{domain}")


def hostile_request(rng: random.Random) -> MailRequest:
    attachments = []
    for index in range(rng.randint(0, 3)):
        cid = f"img{index}@x" if rng.random() < 0.5 else None
        attachments.append(
            Attachment(
                filename=rng.choice([None, hostile_text(rng)]),
                content=rng.randbytes(rng.randint(0, 3000)),
                content_type=rng.choice([None, "text/plain; charset=utf-8", 'application/x-thing; name="a b"']),
                cid=cid,
                disposition=rng.choice([None, "inline" if cid else "attachment"]),
            )
        )
    headers = {f"X-H{index}": hostile_text(rng) for index in range(rng.randint(0, 3))}
    text = rng.choice([None, hostile_text(rng), "--=_0123\r\n.\r\nline\rCR only\nLF only"])
    html = rng.choice([None, "<p>" + hostile_text(rng) + "</p>", "<p>" + "ä" * 2000 + "</p>"])
    return MailRequest(
        to=[hostile_mailbox(rng) for _ in range(rng.randint(1, 4))],
        cc=[hostile_mailbox(rng) for _ in range(rng.randint(0, 2))],
        bcc=[Mailbox("Hidden", f"hidden{n}@secret.example") for n in range(rng.randint(0, 2))],
        from_=hostile_mailbox(rng),
        reply_to=rng.choice([None, hostile_mailbox(rng)]),
        headers=headers,
        subject=hostile_text(rng),
        text=text if (text or html) else "fallback",
        html=html,
        amp=rng.choice([None, "<html amp4email>" + hostile_text(rng) + "</html>"]) if (text or html) else None,
        attachments=attachments,
    )


def parsed(composed: ComposedMail) -> EmailMessage:
    """As a reader parses it; UTF-8 headers (SMTPUTF8) are decoded first, since the stdlib byte parser
    reads header octets as ASCII (and every body here is 7-bit)."""
    if composed.smtputf8:
        return email.message_from_string(composed.payload.decode("utf-8"), policy=email.policy.default)  # type: ignore[return-value]
    return email.message_from_bytes(composed.payload, policy=email.policy.default)  # type: ignore[return-value]


def unfolded(value: str) -> str:
    """The stdlib parser drops a value's leading whitespace (kept when it was encoded)."""
    return value.lstrip(" \t")


def reader_view(display_name: str) -> str:
    """A display name without its whitespace: the stdlib reader turns each whitespace run in a display
    name into one space and shows one between adjacent encoded words (RFC 2047 6.2 drops it; a name
    is split into several encoded words when longer than 42 UTF-8 octets). The exact text is checked
    for names of one encoded word in test_display_names_round_trip_exactly."""
    return re.sub(r"\s+", "", display_name)


def assert_wire_format(composed: ComposedMail) -> None:
    payload = composed.payload
    assert payload.count(b"\r") == payload.count(b"\n") == payload.count(b"\r\n"), "a bare CR or LF"
    assert payload.endswith(b"\r\n")
    assert max(map(len, payload.split(b"\r\n"))) <= 998
    head = payload.split(b"\r\n\r\n", 1)[0]
    assert all(line[:1] not in (b" ", b"\t") or line.strip() for line in head.split(b"\r\n")), "blank folded line"
    if not composed.smtputf8:
        assert payload.isascii()
    assert b"secret.example" not in payload


def assert_headers_exactly_as_built(composed: ComposedMail, request: MailRequest) -> None:
    message = parsed(composed)
    assert not message.defects
    names = ["From", "To", *(["Cc"] if request.cc else []), *(["Reply-To"] if request.reply_to else []), "Subject", "Date", "Message-ID", "MIME-Version", *request.headers]
    names += ["Content-Type"] + ([] if message.is_multipart() else ["Content-Transfer-Encoding"])
    assert message.keys() == names
    assert message["Bcc"] is None
    assert str(message["Subject"]) in (request.subject, unfolded(request.subject))
    for name, value in request.headers.items():
        assert str(message[name]) in (value, unfolded(value))
    for header, mailboxes in [("From", [request.from_]), ("To", request.to), ("Cc", request.cc), ("Reply-To", [request.reply_to] if request.reply_to else [])]:
        if not mailboxes:
            continue
        got = [(reader_view(address.display_name), address.addr_spec) for address in message[header].addresses]
        assert got == [(reader_view(mailbox.display_name), mailbox.wire_addr_spec()) for mailbox in mailboxes], header
        # RFC 6532 allows a UTF-8 local part; the stdlib notes it as a defect and nothing else may be.
        assert [d for d in message[header].defects if not isinstance(d, NonASCIILocalPartDefect)] == [], header
    assert message["Message-ID"] == composed.message_id


def assert_parts_exactly_as_built(composed: ComposedMail, request: MailRequest) -> None:
    message = parsed(composed)
    leaves = [part for part in message.walk() if not part.is_multipart()]
    bodies = [body for body in (request.text, request.amp, request.html) if body]
    assert len(leaves) == len(bodies) + len(request.attachments)
    for part in message.walk():
        assert not part.defects
        if part is message:
            continue
        if part.is_multipart():
            assert part.keys() == ["Content-Type"]
            continue
        if part.get_content_maintype() == "text" and part.get_content_disposition() is None:
            assert part.keys() == ["Content-Type", "Content-Transfer-Encoding"]
            continue
    attachments = [part for part in leaves if part.get_content_disposition()]
    assert len(attachments) == len(request.attachments)
    expected = {(a.filename, a.content) for a in request.attachments}
    got = set()
    for part in attachments:
        keys = ["Content-Type", "Content-Transfer-Encoding", "Content-Disposition"] + (["Content-ID"] if part["Content-ID"] else [])
        assert part.keys() == keys
        assert part["Content-Transfer-Encoding"] == "base64"
        got.add((part["Content-Disposition"].params.get("filename"), part.get_payload(decode=True)))
    assert got == expected
    texts = [part for part in leaves if part.get_content_disposition() is None]
    assert [part.get_content().replace("\r\n", "\n").rstrip("\n") for part in texts] == [
        re.sub(r"\r\n|\r", "\n", body).rstrip("\n") for body in bodies
    ]


@pytest.mark.parametrize("seed", range(30))
def test_hostile_inputs_give_exactly_the_intended_headers(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(8):
        request = hostile_request(rng)
        composed = compose(request, DEFAULTS)
        assert_wire_format(composed)
        assert_headers_exactly_as_built(composed, request)
        assert_parts_exactly_as_built(composed, request)


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("utf8", [False, True])
def test_each_hostile_value_in_every_header_position(value: str, utf8: bool) -> None:
    jorg = Mailbox("", "jörg@example.com")
    request = MailRequest(
        to=[Mailbox(value, "ada@example.com"), Mailbox(value, "bob@example.com")],
        cc=[jorg] if utf8 else [],
        bcc=[Mailbox(value, "hidden@secret.example")],
        from_=Mailbox(value, "app@example.com"),
        reply_to=Mailbox(value, "r@example.com"),
        headers={"X-Value": value, "List-Id": value},
        subject=value,
        text=value,
        html=value,
        attachments=[Attachment(value, value.encode(), None, "c@x", None), Attachment(value, b"\x00", None, None, None)],
    )
    composed = compose(request, DEFAULTS)
    assert composed.smtputf8 is utf8
    assert_wire_format(composed)
    assert_headers_exactly_as_built(composed, request)
    assert_parts_exactly_as_built(composed, request)


@pytest.mark.parametrize(
    "bad",
    ["a\r\nBcc: evil@x.com", "a\rBcc: evil@x.com", "a\nBcc: evil@x.com", "a\x00b", "a\u2028b", "a\x85b", "=?utf-8?q?x=0D=0ABcc:_e@x.com?="],
)
def test_every_header_bound_input_refuses_line_breaks_and_encoded_words(bad: str) -> None:
    """The inputs that reach headers are refused before the writer, each naming its field."""
    base = {"to": "ada@example.com", "message": {"subject": "S", "text": "t"}}
    cases = [
        ({**base, "to": f'"{bad}" <ada@example.com>'}, "to"),
        ({**base, "from": f'"{bad}" <ada@example.com>'}, "from"),
        ({**base, "headers": {"X-A": bad}}, "headers.X-A"),
        ({**base, "message": {"subject": bad, "text": "t"}}, "message.subject"),
        ({**base, "message": {"subject": "S", "text": "t", "attachments": [{"filename": bad, "content": "x"}]}}, "message.attachments[0].filename"),
        ({**base, "message": {"subject": "S", "text": "t", "attachments": [{"cid": bad, "content": "x"}]}}, "message.attachments[0].cid"),
        ({**base, "message": {"subject": "S", "text": "t", "attachments": [{"contentType": f'text/plain; name="{bad}"', "content": "x"}]}}, "message.attachments[0].contentType"),
    ]
    for document, field in cases:
        with pytest.raises(MailInputError) as caught:
            parse_mail_document(document)
        assert caught.value.field == field


@pytest.mark.parametrize("bad", ["a\r\nBcc: e@x.com", "a\nb", "a\rb", "a\x00b", "a\u2029b"])
def test_the_writer_itself_never_writes_a_line_break_into_a_header(bad: str) -> None:
    """Defence in depth: text that skipped validation is refused by mime.py, not written."""
    for write in (
        lambda: mime.unstructured("Subject", bad, False),
        lambda: mime.unstructured("Subject", bad, True),
        lambda: mime.address_list("To", [(bad, "a@example.com")], False),
        lambda: mime.address_list("To", [("", bad)], True),
        lambda: mime.parameterized("Content-Disposition", "attachment", [("filename", bad)]),
        lambda: mime.simple("Message-ID", bad),
    ):
        with pytest.raises(MailInputError, match="^message: a header value contains a line break"):
            write()


def test_folding_prefers_78_and_keeps_text_exact() -> None:
    subject = "one two  three\tfour " * 20
    line = mime.unstructured("Subject", subject, False)
    assert all(len(part) <= 78 for part in line.split("\r\n")[:-1])
    assert line.replace("\r\n", "") == f"Subject: {subject}"
    long_word = mime.unstructured("X-Long", "y" * 2000, False)
    assert all(len(part) <= 78 for part in long_word.split("\r\n")[:-1])


def test_encoded_words_split_on_character_boundaries() -> None:
    for text in ["ü" * 100, "🎉" * 50, "a" + "中" * 60, "é"]:
        words = mime._encoded_words(text)
        assert all(len(word) <= 75 for word in words)
        decoded = "".join(email.header.decode_header(word)[0][0].decode("utf-8") for word in words)
        assert decoded == text


def test_long_and_non_ascii_filenames_use_rfc2231_continuations() -> None:
    name = "Überweisung " * 30 + ".pdf"
    header = mime.parameterized("Content-Disposition", "attachment", [("filename", name)])
    assert "filename*0*=utf-8''" in header and "filename*1*=" in header
    assert max(len(line) for line in header.split("\r\n")) <= 78
    message = email.message_from_string(header + "\r\n", policy=email.policy.default)
    assert message.get_filename() == name


def test_boundary_never_occurs_in_a_part() -> None:
    children = [mime.text_part("plain", "--=_" + "0" * 24 + "\n")]
    part = mime.multipart("mixed", children, False)
    boundary = re.search(r'boundary="([^"]+)"', part.headers[0]).group(1)
    assert part.body.count(b"--" + boundary.encode()) == 2  # opening and closing delimiters only


@pytest.mark.parametrize(
    "name",
    ["Ada Lovelace", "Lovelace, Ada", 'Ada "the first" Lovelace', "back\\slash", "a@x.com", "Zoë Ünal", "Bäckerei Müller, Köln", "中文 名字", "=?x", "x?=", "--=_0a", "Ünal " * 12],
)
@pytest.mark.parametrize("utf8", [False, True])
def test_display_names_round_trip_exactly(name: str, utf8: bool) -> None:
    to = [Mailbox(name, "ada@example.com"), Mailbox(name, "jörg@example.com" if utf8 else "bob@example.com")]
    composed = compose(MailRequest(to=to, subject=name, text="t"), DEFAULTS)
    message = parsed(composed)
    names = [address.display_name for address in message["To"].addresses]
    if len(name.encode()) > 42 and not utf8 and not name.isascii():
        names = [re.sub(r"  +", " ", shown) for shown in names]  # the stdlib's space between encoded words
    assert names == [name, name]
    assert str(message["Subject"]) == name


def test_long_content_type_names_are_refused_and_long_parameter_values_fold() -> None:
    base = {"to": "ada@example.com", "message": {"subject": "S", "text": "t", "attachments": [{"content": "x"}]}}
    for content_type in ["application/" + "x" * 200, "x" * 200 + "/y", "text/plain; " + "a" * 200 + "=b"]:
        document = {**base, "message": {**base["message"], "attachments": [{"content": "x", "contentType": content_type}]}}
        with pytest.raises(MailInputError, match=r"^message.attachments\[0\].contentType: type, subtype and parameter names must be at most 127"):
            parse_mail_document(document)
    value = "v" * 127 + "w" * 2000
    attachment = Attachment("f.txt", b"x", f'text/plain; {"k" * 127}="{value}"', None, None)
    composed = compose(MailRequest(to=[Mailbox("", "ada@example.com")], subject="S", text="t", attachments=[attachment]), DEFAULTS)
    assert_wire_format(composed)
    part = list(parsed(composed).iter_attachments())[0]
    assert part["Content-Type"].params["k" * 127] == value


def test_a_header_line_over_998_octets_is_never_written() -> None:
    with pytest.raises(MailInputError, match="^message: a X-Long header line would be"):
        mime._fold("X-Long", ["y" * 1000])


def test_date_and_message_id_match_the_email_package() -> None:
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    moment = datetime(2026, 1, 4, 5, 6, 7, tzinfo=timezone.utc)
    for days in range(0, 400, 13):
        when = moment + timedelta(days=days, hours=days)
        assert mime.date_value(when) == format_datetime(when)
    assert re.fullmatch(r"<\d+\.\d+\.\d+@example\.org>", mime.new_message_id("example.org"))

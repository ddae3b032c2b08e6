"""Fuzzing the document parser and composer: whatever a client writes into a mail document, prepare()
either refuses it with a one-line reason that starts with the field at fault, or composes a message
that is safe to send. Any other exception (the handler's "internal error" path) fails the test.

Derandomized with a fixed number of examples, so CI runs the same inputs every time."""

from __future__ import annotations

import datetime
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.prepare import Refusal, prepare
from mailer.settings import Settings

SETTINGS = Settings(None, default_from="App <app@example.com>")
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# Where a refusal may point: the document's fields (with a path into them) or the function's settings.
# A member is `.name`, `[index]`, or a quoted key `['a: b']` when the key would make the field name
# ambiguous (spaces, ':', quotes, brackets, controls).
_FIELD = re.compile(
    r"(?:(?:document|to|cc|bcc|from|replyTo|toUids|ccUids|bccUids|headers|message|template)"
    r"""(?:\.[^\s:'"\[\]\\]+|\[\d+\]|\['(?:[^'\\]|\\.)*'\]|\["(?:[^"\\]|\\.)*"\]|\[[^\]'"]*\])*"""
    r"|function configuration): \S"
)

# Characters that break parsers, headers or display: controls, line separators, bidi controls and
# marks, non-characters, lone surrogates (a Python str can hold them; Firestore would not deliver
# them, but nothing should crash on them), and the specials of the address and MIME grammars.
HOSTILE_CHARS = [
    "\r", "\n", "\r\n", "\x00", "\t", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\u2029",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
    "\u200e", "\u200f", "\u061c", "\ufeff", "\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0010ffff",
    "\ud800", "\udfff", "=?utf-8?q?=0D=0ABcc:x@evil.example?=", "=?", "?=",
    ",", ";", ":", "<", ">", '"', "\\", "@", "(", ")", "[", "]", " ", "  ", "=", "/", "*", "'",
    "é", "日本", "\U0001f600", "a" * 80,
]
hostile_text = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_CHARS),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=8),
        st.text(alphabet="abc xyz.-", max_size=12),
    ),
    max_size=12,
).map("".join)
# Huge values, bounded so the whole module runs in seconds.
huge_text = st.builds(lambda piece, count: piece * count, st.sampled_from(["a", "é ", "日", "ab ", "\u202e", "x\n"]), st.integers(1_000, 30_000))
text = st.one_of(hostile_text, huge_text)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=20),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
    hostile_text,
)
# Any Firestore-shaped value, nested up to a few levels (maps and arrays of maps and arrays ...).
any_value = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.one_of(hostile_text, st.sampled_from(["to", "subject", "content"])), children, max_size=3)
    ),
    max_leaves=12,
)


def deep(levels: int) -> object:
    value: object = "x"
    for level in range(levels):
        value = [value] if level % 2 else {"a": value}
    return value


wrong = st.one_of(any_value, st.builds(deep, st.integers(50, 400)))

addr_spec = st.one_of(
    st.sampled_from(["ada@example.com", "b.c+tag@example.org", "üser@exämple.com", "x@localhost", "x@[127.0.0.1]", "@example.com", "a@"]),
    st.builds(lambda local, domain: f"{local}@{domain}", hostile_text, st.sampled_from(["example.com", "exämple.com", "a" * 70 + ".com"])),
)
display_name = st.one_of(st.just(""), hostile_text, huge_text.map(lambda value: value[:5_000]))
mailbox = st.one_of(
    addr_spec,
    st.builds(lambda name, addr: f"{name} <{addr}>", display_name, addr_spec),
    st.builds(lambda name, addr: f'"{name}" <{addr}>', display_name, addr_spec),
    text,
)
address_field = st.one_of(mailbox, st.lists(mailbox, max_size=4), st.lists(mailbox, max_size=4).map(", ".join), wrong)

content_type = st.one_of(
    st.sampled_from(["text/plain", "image/png", "application/pdf; name=\"a.pdf\"", "multipart/mixed", "text/plain; charset=utf-8"]),
    st.builds(lambda param: f'application/pdf; name="{param}"', hostile_text),
    st.builds(lambda main, sub: f"{main}/{sub}", hostile_text, hostile_text),
    text,
    wrong,
)
attachment = st.fixed_dictionaries(
    {},
    optional={
        "filename": st.one_of(st.sampled_from(["a.pdf", "invoice\u202egnp.exe", "photo.png"]), text, wrong),
        "content": st.one_of(st.sampled_from(["aGVsbG8=", "68656c6c6f", "hello"]), st.binary(max_size=100), text, wrong),
        "encoding": st.one_of(st.sampled_from(["base64", "hex", "utf-8", "utf8", "latin-1"]), hostile_text, wrong),
        "contentType": content_type,
        "cid": st.one_of(st.sampled_from(["logo", "<logo@x>", "a b", "<>"]), hostile_text, wrong),
        "contentDisposition": st.one_of(st.sampled_from(["inline", "attachment", "form-data"]), hostile_text, wrong),
        "path": st.just("/etc/passwd"),
        "raw": any_value,
    },
)
message = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "subject": st.one_of(st.just("Hi"), text, wrong),
            "text": st.one_of(st.just("Hello"), text, wrong),
            "html": st.one_of(st.just("<p>Hi <img src=cid:logo></p>"), text, wrong),
            "amp": st.one_of(text, wrong),
            "attachments": st.one_of(st.lists(st.one_of(attachment, wrong), max_size=3), wrong),
        },
    ),
    st.dictionaries(st.one_of(hostile_text, st.sampled_from(["subject", "text", "htlm", "to", "priority"])), any_value, max_size=4),
    wrong,
)
header_name = st.one_of(st.sampled_from(["X-Tag", "List-Unsubscribe", "Subject", "Resent-From", "x-tag", "X" * 100]), hostile_text)
headers = st.one_of(st.dictionaries(header_name, st.one_of(text, any_value), max_size=4), wrong)
template = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.just("welcome"), hostile_text, wrong)}, optional={"data": wrong, "fallback": wrong}),
    wrong,
)
uids = st.one_of(st.lists(st.one_of(st.sampled_from(["u1", "a/b", "..", "__x__"]), hostile_text, wrong), max_size=3), wrong)

document = st.fixed_dictionaries(
    {},
    optional={
        "to": address_field,
        "cc": address_field,
        "bcc": address_field,
        "from": address_field,
        "replyTo": address_field,
        "headers": headers,
        "message": message,
        "template": template,
        "toUids": uids,
        "delivery": any_value,
    },
)
# Mostly-valid documents with one hostile field, so the fuzz reaches the composer and not only the
# first check that fails.
VALID = {"to": "Ada <ada@example.com>", "message": {"subject": "Hi", "text": "Hello", "html": "<p>Hi</p>"}}
injected = st.builds(lambda before, char, after: f"{before}{char}{after}", st.sampled_from(["", "Hi ", "invoice"]), st.sampled_from(HOSTILE_CHARS), st.sampled_from(["", " there", ".pdf"]))
one_bad_field = st.one_of(
    st.builds(lambda name: {**VALID, "to": f"{name} <ada@example.com>"}, injected),
    st.builds(lambda name: {**VALID, "from": f'"{name}" <app@example.com>'}, injected),
    st.builds(lambda value: {**VALID, "headers": {"X-Tag": value}}, injected),
    st.builds(lambda key, value: {**VALID, "message": {**VALID["message"], key: value}}, st.sampled_from(["subject", "text", "html", "amp"]), injected),
    st.builds(
        lambda key, value: {**VALID, "message": {**VALID["message"], "attachments": [{"content": "x", "filename": "a.txt", key: value}]}},
        st.sampled_from(["filename", "content", "contentType", "cid", "contentDisposition", "encoding"]),
        injected,
    ),
    st.builds(lambda key, value: {**VALID, key: value}, st.sampled_from(["to", "cc", "bcc", "from", "replyTo"]), address_field),
    st.builds(lambda value: {**VALID, "headers": value}, headers),
    st.builds(lambda key, value: {**VALID, "message": {**VALID["message"], key: value}}, st.sampled_from(["subject", "text", "html", "amp"]), text),
    st.builds(lambda items: {**VALID, "message": {**VALID["message"], "attachments": items}}, st.lists(attachment, min_size=1, max_size=2)),
)


def check(fields: object) -> None:
    try:
        prepared = prepare(fields, SETTINGS)  # type: ignore[arg-type]
    except Refusal as refusal:
        reason = str(refusal)
        assert _FIELD.match(reason), f"refusal does not start with a field name: {reason!r}"
        assert "\n" not in reason and "\r" not in reason, reason
        return
    payload = prepared.mail.payload
    head = payload.split(b"\r\n\r\n", 1)[0]
    if not prepared.mail.smtputf8:
        head.decode("ascii")
    assert max(map(len, payload.split(b"\r\n"))) <= 998
    assert re.fullmatch(rb"(?:[^\r\n]*\r\n)*[^\r\n]*", payload), "a bare CR or LF in the message"


@FUZZ
@given(document)
def test_any_document_is_refused_naming_a_field_or_composed(fields: dict) -> None:
    check(fields)


@FUZZ
@given(one_bad_field)
def test_a_valid_document_with_one_hostile_field_is_refused_naming_it_or_composed(fields: dict) -> None:
    check(fields)


@FUZZ
@given(wrong)
def test_a_document_that_is_not_a_map_is_refused(fields: object) -> None:
    check(fields)


class _OneTemplate:
    """A template store holding one template that puts `data.v` into every header-bound field."""

    def __init__(self) -> None:
        from mailer.templates import Template, parse_template_document

        fields = {"subject": "Re: {{v}}", "text": "{{v}}", "html": "<p>{{{v}}}</p>", "attachments": [{"filename": "{{v}}.txt", "content": "{{v}}"}]}
        self._template = Template(parse_template_document("fuzz", fields, "collection 'mail-templates'"))

    def template(self, ref: object) -> object:
        return self._template


_TEMPLATES = None


@FUZZ
@given(st.one_of(text, any_value, st.builds(deep, st.integers(5, 40))))
def test_a_template_rendering_any_data_is_refused_naming_the_template_or_composed(value: object) -> None:
    global _TEMPLATES
    from mailer.prepare import Lookups

    _TEMPLATES = _TEMPLATES or Lookups(templates=_OneTemplate())  # type: ignore[arg-type]
    fields = {"to": "ada@example.com", "template": {"name": "fuzz", "data": {"v": value}}}
    try:
        prepared = prepare(fields, SETTINGS, _TEMPLATES)
    except Refusal as refusal:
        reason = str(refusal)
        assert reason.startswith("template: 'fuzz' in collection 'mail-templates' "), reason
        assert "\n" not in reason and "\r" not in reason, reason
        return
    assert max(map(len, prepared.mail.payload.split(b"\r\n"))) <= 998

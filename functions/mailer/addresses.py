"""Strict parsing of the address fields of a mail document (to, cc, bcc, from, replyTo).

Accepted forms, per entry:  ``ada@example.com``, ``Ada Lovelace <ada@example.com>``,
``"Lovelace, Ada" <ada@example.com>``. A string may hold several entries separated by commas
outside quotes (as nodemailer reads it); a list holds exactly one entry per element.

Anything else is refused rather than repaired: comments, groups, ``;`` separators, stray angle
brackets, two addresses where one is expected, control characters, RFC 2047 encoded-words.
``email.utils.parseaddr`` is deliberately not used: it rewrites hostile strings into some other
address instead of failing. The addr-spec itself is checked by email-validator (no quoted local
parts, no IP literals, no DNS lookups).
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from email_validator import EmailNotValidError, ValidatedEmail, validate_email

# Characters that end or break a header line, plus the rest of C0/C1 controls and the
# Unicode line separators that str.splitlines() honours.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Python's email package decodes encoded-words wherever they appear (even inside a local part)
# and re-emits the decoded text raw, so "=?utf-8?q?=0D=0ABcc:...?=" would inject a header.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
# Characters that may not appear in an unquoted display name. "@" is refused so that
# `a@x.com <b@y.com>` cannot pass for a@x.com; quote the name if it really contains one.
_UNQUOTED_NAME_SPECIALS = set('<>()[]\\",;:@')
_ADDR_SPEC_SPECIALS = set('<>"(),;:[]\\')
_SHOWN_CHARS = 60
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Bidirectional embedding, override and isolate controls (LRE RLE PDF LRO RLO, LRI RLI FSI PDI): they
# reorder the text after them on screen, so "invoice\u202egnp.exe" reads as "invoiceexe.png". Refused in
# every header text. The marks (LRM, RLM, ALM) only set the direction of neighbouring neutral
# characters and are common in right-to-left text, so they are allowed, except in file names.
_BIDI_CONTROL = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_BIDI_MARK = re.compile(r"[\u200e\u200f\u061c]")
MAX_DISPLAY_NAME_CHARS = 256


class AddressError(ValueError):
    """An address field that does not hold what it must; str() is one line starting with the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = one_line(field)
        self.reason = one_line(reason)
        super().__init__(f"{self.field}: {self.reason}")


def one_line(text: str) -> str:
    """Escape control characters so a message can never span lines or smuggle a CR into a log."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def firestore_type_name(value: object) -> str:
    """Name a value's type the way a Firestore user knows it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, datetime.datetime):
        return "timestamp"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "map"
    return type(value).__name__


def shown(value: str) -> str:
    """A value quoted for an error message: escaped to one line and cut short."""
    text = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
    return repr(text)


def text_problem(text: str) -> str | None:
    """Why `text` cannot be sent as text at all (a body, any header), or None when it can."""
    if _SURROGATE.search(text):
        return "must not contain lone surrogates (U+D800 to U+DFFF), which are not Unicode text and cannot be encoded"
    return None


def bidi_codes(text: str, *, marks: bool = False) -> list[str]:
    """The bidirectional control characters in `text` (and the marks, if asked), as U+XXXX, once each."""
    found = _BIDI_CONTROL.findall(text)
    if marks:
        found += _BIDI_MARK.findall(text)
    return sorted({f"U+{ord(char):04X}" for char in found})


def header_text_problem(text: str, *, file_name: bool = False) -> str | None:
    """Why `text` must not go into a header, or None when it may. `file_name`: the text is (or holds)
    a file name, where bidirectional marks are refused too."""
    if _CONTROL.search(text):
        return "must not contain CR, LF, NUL or other control characters"
    problem = text_problem(text)
    if problem:
        return problem
    codes = bidi_codes(text, marks=file_name)
    if codes:
        effect = "disguise a file name as another" if file_name else "make text display in a different order than it is written"
        return f"must not contain bidirectional control characters ({', '.join(codes)}), which can {effect}"
    if _ENCODED_WORD.search(text):
        return "must not contain '=?...?=' (RFC 2047 encoded-word syntax); write plain text, it is encoded when sent"
    return None


@functools.lru_cache(maxsize=1024)
def _validated(addr_spec: str) -> ValidatedEmail:
    return validate_email(
        addr_spec,
        check_deliverability=False,
        allow_smtputf8=True,
        allow_quoted_local=False,
        allow_domain_literal=False,
        allow_display_name=False,
    )


@dataclass(frozen=True)
class Mailbox:
    """One validated address with an optional display name; addr_spec is email-validator's normal form."""

    display_name: str
    addr_spec: str
    # ASCII form (IDNA domain) when the address has one; None means only SMTPUTF8 can carry it.
    _ascii_addr_spec: str | None = dataclass_field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        # Every Mailbox is safe to put in a header or envelope, however it was built.
        if not isinstance(self.display_name, str):
            raise AddressError("display_name", f"expected a string, got {firestore_type_name(self.display_name)}")
        if not isinstance(self.addr_spec, str):
            raise AddressError("addr_spec", f"expected a string, got {firestore_type_name(self.addr_spec)}")
        problem = header_text_problem(self.display_name)
        if problem:
            raise AddressError("display_name", f"display names {problem}")
        validated = _validate_addr_spec(self.addr_spec, "addr_spec")
        object.__setattr__(self, "addr_spec", validated.normalized)
        object.__setattr__(self, "_ascii_addr_spec", validated.ascii_email)

    def needs_smtputf8(self) -> bool:
        """True when the address cannot be written in ASCII (non-ASCII local part)."""
        return self._ascii_addr_spec is None

    def wire_addr_spec(self) -> str:
        """The address as it goes on the wire: ASCII (IDNA domain) when possible, else UTF-8."""
        return self._ascii_addr_spec or self.addr_spec

    def domain(self) -> str:
        """The domain only: the one part of an address that may be logged."""
        return self.addr_spec.rpartition("@")[2]


def parse_address_list(value: object, field: str) -> list[Mailbox]:
    """Parse to/cc/bcc: one string of comma-separated entries, or a list of one entry each."""
    if isinstance(value, str):
        entries = _split_outside_quotes(value, field)
        if len(entries) == 1:
            return [_parse_entry(entries[0], field)]
        return [
            _parse_entry(entry, field, position=f" (address {number} of the comma-separated list)")
            for number, entry in enumerate(entries, start=1)
        ]
    if isinstance(value, (list, tuple)):
        mailboxes = []
        for index, element in enumerate(value):
            element_field = f"{field}[{index}]"
            if not isinstance(element, str):
                raise AddressError(element_field, f"expected a string, got {firestore_type_name(element)}")
            mailboxes.append(_parse_entry(element, element_field, one_per_entry=True))
        return mailboxes
    raise AddressError(field, f"expected a string or a list of strings, got {firestore_type_name(value)}")


def parse_mailbox(value: object, field: str) -> Mailbox:
    """Parse a field that holds exactly one address (from, replyTo)."""
    if not isinstance(value, str):
        raise AddressError(field, f"expected a single address string, got {firestore_type_name(value)}")
    return _parse_entry(value, field, one_per_entry=True)


def _split_outside_quotes(value: str, field: str) -> list[str]:
    """Split on commas that are not inside a quoted display name; an empty string holds no entries."""
    if not value.strip():
        return []
    entries: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    if in_quotes:
        raise AddressError(field, f"unterminated quoted display name in {shown(value)}")
    entries.append("".join(current))
    return entries


def _parse_entry(text: str, field: str, *, position: str = "", one_per_entry: bool = False) -> Mailbox:
    """Parse `[display-name] <addr-spec>` or a bare addr-spec, refusing anything ambiguous."""
    problem = header_text_problem(text)
    if problem:
        raise AddressError(field, f"addresses {problem}{position}")
    entry = text.strip()
    if not entry:
        raise AddressError(field, f"empty address{position}")
    if entry.startswith('"'):
        display_name, rest = _take_quoted(entry, field, position)
        rest = rest.lstrip()
        if not rest.startswith("<"):
            raise AddressError(field, f"a quoted display name must be followed by <address> in {shown(entry)}{position}")
    elif "<" in entry:
        cut = entry.index("<")
        display_name, rest = entry[:cut].strip(), entry[cut:]
        bad = sorted(_UNQUOTED_NAME_SPECIALS.intersection(display_name))
        if bad:
            reason = _why_bad_name_chars(bad, one_per_entry)
            raise AddressError(field, f"{reason} in {shown(entry)}{position}")
    else:
        return Mailbox("", _checked_addr_spec(entry, entry, field, position, one_per_entry))
    if len(display_name) > MAX_DISPLAY_NAME_CHARS:
        raise AddressError(
            field, f"display names must be at most {MAX_DISPLAY_NAME_CHARS} characters, this one has {len(display_name)}{position}"
        )
    return Mailbox(display_name, _take_angle_addr(rest, entry, field, position, one_per_entry))


def _why_bad_name_chars(bad: list[str], one_per_entry: bool) -> str:
    if "," in bad and one_per_entry:
        return "expected one address, found ',' (several addresses, or a display name that needs quotes)"
    quoted = " ".join(repr(char) for char in bad)
    return f"display name contains {quoted}; put the name in double quotes"


def _take_quoted(entry: str, field: str, position: str) -> tuple[str, str]:
    """Read a leading quoted-string; return its unescaped content and the text after it."""
    content: list[str] = []
    index = 1
    while index < len(entry):
        char = entry[index]
        if char == "\\" and index + 1 < len(entry):
            content.append(entry[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(content), entry[index + 1 :]
        content.append(char)
        index += 1
    raise AddressError(field, f"unterminated quoted display name in {shown(entry)}{position}")


def _take_angle_addr(rest: str, original: str, field: str, position: str, one_per_entry: bool) -> str:
    """Read `<addr-spec>` that must end the entry."""
    close = rest.find(">")
    if close == -1:
        raise AddressError(field, f"missing '>' in {shown(original)}{position}")
    if "<" in rest[1:close]:
        raise AddressError(field, f"stray '<' in {shown(original)}{position}")
    trailing = rest[close + 1 :].strip()
    if trailing:
        raise AddressError(field, f"unexpected text after '>' in {shown(original)}{position}")
    inner = rest[1:close].strip()
    if not inner:
        raise AddressError(field, f"empty <> in {shown(original)}{position}")
    return _checked_addr_spec(inner, original, field, position, one_per_entry)


def _checked_addr_spec(candidate: str, original: str, field: str, position: str, one_per_entry: bool) -> str:
    if "," in candidate and one_per_entry:
        raise AddressError(field, f"expected one address, found ',' in {shown(original)}")
    bad = sorted(_ADDR_SPEC_SPECIALS.intersection(candidate))
    if bad:
        quoted = " ".join(repr(char) for char in bad)
        raise AddressError(field, f"{shown(original)} is not a valid email address (unexpected {quoted}){position}")
    if any(char.isspace() for char in candidate):
        raise AddressError(field, f"{shown(original)} is not a valid email address (contains whitespace){position}")
    return _validate_addr_spec(candidate, field, original=original, position=position).normalized


def _validate_addr_spec(candidate: str, field: str, *, original: str | None = None, position: str = "") -> ValidatedEmail:
    problem = header_text_problem(candidate)
    if problem:
        raise AddressError(field, f"addresses {problem}{position}")
    try:
        return _validated(candidate)
    except EmailNotValidError as error:
        reason = str(error).rstrip(".")
        subject = shown(original if original is not None else candidate)
        raise AddressError(field, f"{subject} is not a valid email address ({reason}){position}") from None

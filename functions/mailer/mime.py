"""A small MIME writer for the shapes compose() builds, serializing a message exactly once.

Safe by construction rather than by re-parsing the output:
- Every header is written here from strings that were validated before (addresses.header_text_problem:
  no CR, LF or other controls, no encoded words); each text is checked again for line-breaking
  characters as it is written, so a bare CR or LF cannot reach a header whatever the caller passes.
- Header lines are folded only before whitespace that is followed by text (no whitespace-only
  continuation lines), preferably at 78 characters; a piece that could not fold under SMTP's 998 octets
  is written as encoded words instead, so no header line is longer than 998 octets.
- Non-ASCII text in a 7-bit message (no SMTPUTF8) is written as RFC 2047 encoded words (B encoding,
  split on character boundaries) in unstructured values and display names, and as RFC 2231
  ``name*=utf-8''...`` in parameters (file names); with SMTPUTF8 it is written as UTF-8 (RFC 6532),
  except parameters, which always use RFC 2231 when they are not plain printable ASCII.
- Bodies are 7-bit safe: 7bit when the text is plain printable ASCII with short lines, quoted-printable
  for mostly-ASCII text, base64 for other text and every attachment. Lines end in CRLF, always.
- Multipart boundaries are random and checked against the parts they separate.
"""

from __future__ import annotations

import binascii
import os
import random
import re
import time
from datetime import datetime

from mailer.document import MailInputError

CRLF = b"\r\n"
MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1, without the CRLF
FOLD_AT = 78  # preferred line length (RFC 5322 2.1.1)
# A header piece (text between two folding points) longer than this becomes encoded words: header
# name (at most 76 characters, see document.MAX_HEADER_NAME_CHARS) + ": " + piece stays under 998.
_MAX_PIECE_OCTETS = 900
_ENCODED_WORD_OCTETS = 42  # 56 base64 characters: "=?UTF-8?B?...?=" is 68 characters (RFC 2047 allows 75)
_BASE64_LINE = 76

# The characters addresses.header_text_problem refuses as line breaks or controls (tab is allowed).
_LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Split before each run of whitespace that has text after it: every piece but the first starts with
# whitespace and holds text, so a fold (CRLF inserted before a piece) never leaves a blank line.
_FOLD_POINTS = re.compile(r"(?<![ \t])(?=[ \t]+[^ \t])")
_WORD_RUNS = re.compile(r"[^ \t]+")
_BLANK_RUNS = re.compile(r"[ \t]+")
_ATEXT = r"A-Za-z0-9!#$%&'*+/^_`{|}~-"  # RFC 5322 atext without "=" and "?" (no encoded-word lookalikes)
_ASCII_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_UTF8_WORD = rf"(?:[{_ATEXT}]|[^\x00-\x7f\s])+"  # RFC 6532 atext: UTF-8 too, but no (Unicode) whitespace
_UTF8_PHRASE = re.compile(rf"{_UTF8_WORD}(?: {_UTF8_WORD})*")
_QUOTABLE = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')  # printable ASCII without " and \
_ATTR_CHAR = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]")  # RFC 2231 attribute-char
_NEWLINES = re.compile(r"\r\n|\r")
_NOT_7BIT_TEXT = re.compile(rb"[^\t\n\x20-\x7e]")


class Part:
    """A MIME entity: its header lines (str, each ending in CRLF) and its body (bytes, ending in CRLF)."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: list[str], body: bytes) -> None:
        self.headers = headers
        self.body = body


def _checked(text: str) -> str:
    if _LINE_BREAKING.search(text):
        # Unreachable for validated input: every caller's text went through header_text_problem.
        raise MailInputError("message", "a header value contains a line break or control character; refused")
    return text


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _fold(name: str, pieces: list[str]) -> str:
    """`Name: piece piece...` with CRLF before a piece (which starts with whitespace) where the line
    would pass FOLD_AT; a single piece longer than that stays on its own line."""
    line = f"{name}: {pieces[0]}"
    lines = []
    for piece in pieces[1:]:
        if len(line) + len(piece) > FOLD_AT:
            lines.append(line)
            line = piece
        else:
            line += piece
    lines.append(line)
    for line in lines:  # holds by construction (pieces are at most 900 octets); kept as the guarantee
        if len(line) > MAX_LINE_OCTETS // 4 and _octets(line) > MAX_LINE_OCTETS:
            raise MailInputError("message", f"a {name} header line would be {_octets(line)} octets, over SMTP's 998")
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded words, each whole characters, without whitespace between them (a reader
    joins adjacent encoded words and drops the folding whitespace)."""
    data = text.encode("utf-8")
    words = []
    start, size = 0, len(data)
    while start < size:
        end = min(start + _ENCODED_WORD_OCTETS, size)
        if end < size:
            # Prefer to end a word after a space: some readers (the stdlib's, in display names) show
            # a space between adjacent encoded words that RFC 2047 6.2 says to drop.
            space = max(data.rfind(b" ", start, end), data.rfind(b"\t", start, end))
            if space > start:
                end = space + 1
        while end < size and data[end] & 0xC0 == 0x80:  # never split a UTF-8 sequence
            end -= 1
        words.append("=?UTF-8?B?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?=")
        start = end
    return words or [""]


def _spaced(words: list[str]) -> list[str]:
    return [words[0], *(" " + word for word in words[1:])]


def unstructured(name: str, value: str, utf8: bool) -> str:
    """An unstructured header (Subject, a custom header): the value as given, folded or encoded."""
    _checked(value)
    if not utf8 and not value.isascii():
        return _fold(name, _spaced(_encoded_words(value)))
    if len(name) + 2 + len(value) <= FOLD_AT:
        return f"{name}: {value}\r\n"
    pieces = _FOLD_POINTS.split(value)
    if not pieces[0] and len(pieces) > 1:  # leading whitespace: keep it on the first line
        pieces[0:2] = [pieces[1]]
    if any(len(piece) > _MAX_PIECE_OCTETS // 4 and _octets(piece) > _MAX_PIECE_OCTETS for piece in pieces):
        return _fold(name, _spaced(_encoded_words(value)))
    return _fold(name, pieces)


def _display_words(display_name: str, utf8: bool) -> list[str]:
    """A display name as phrase words: atoms, one quoted-string, or encoded words."""
    _checked(display_name)
    if not display_name:
        return []
    if not utf8 and not display_name.isascii():
        return _encoded_words(display_name)
    if (_ASCII_PHRASE if display_name.isascii() else _UTF8_PHRASE).fullmatch(display_name):
        phrase = display_name
    else:
        phrase = '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if _octets(phrase) > _MAX_PIECE_OCTETS:
        return _encoded_words(display_name)
    return [phrase]


def address_list(name: str, mailboxes: list[tuple[str, str]], utf8: bool) -> str:
    """From, To, Cc, Reply-To: `(display name, wire addr-spec)` pairs, folded after commas (or between
    a name's words and its <address>)."""
    pieces: list[str] = []
    last = len(mailboxes) - 1
    for index, (display_name, addr_spec) in enumerate(mailboxes):
        _checked(addr_spec)
        comma = "," if index < last else ""
        words = _display_words(display_name, utf8)
        if words:
            pieces.extend(words)
            pieces.append(f"<{addr_spec}>{comma}")
        else:
            pieces.append(addr_spec + comma)
    return _fold(name, _spaced(pieces))


def _rfc2231_sections(name: str, value: str) -> list[str]:
    """`name*=utf-8''%..` or, when long, `name*0*=utf-8''..; name*1*=..` split on character boundaries."""
    encoded = []
    for char in value:
        if _ATTR_CHAR.match(char):
            encoded.append(char)
        else:
            encoded.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
    text = "".join(encoded)
    if len(text) <= 60:
        return [f"{name}*=utf-8''{text}"]
    sections, current, size = [], [], 0
    for chunk in encoded:
        if size + len(chunk) > 60 and current:
            sections.append("".join(current))
            current, size = [], 0
        current.append(chunk)
        size += len(chunk)
    sections.append("".join(current))
    return [f"{name}*0*=utf-8''{sections[0]}", *(f"{name}*{n}*={s}" for n, s in enumerate(sections[1:], start=1))]


def parameterized(name: str, value: str, params: list[tuple[str, str]]) -> str:
    """Content-Type / Content-Disposition: `value; a="b"; ...`, folded between parameters. Parameter
    names are MIME tokens (checked by the caller); values are quoted when plain printable ASCII and
    written per RFC 2231 otherwise."""
    _checked(value)
    rendered: list[str] = []
    for key, param in params:
        _checked(key)
        _checked(param)
        if len(key) + len(param) <= _MAX_PIECE_OCTETS and _QUOTABLE.fullmatch(param):
            rendered.append(f'{key}="{param}"')
        else:
            rendered.extend(_rfc2231_sections(key, param))
    if not rendered:
        return f"{name}: {value}\r\n"
    pieces = [value + ";", *(f" {item};" for item in rendered)]
    pieces[-1] = pieces[-1][:-1]
    return _fold(name, pieces)


def folded_ascii(name: str, value: str, field_name: str) -> str:
    """A header whose ASCII value must reach the reader as written (JSON: SendGrid's X-SMTPAPI), never as
    encoded words: folded only before existing spaces (unfolding, which removes just the CRLF, gives the
    value back), preferably at FOLD_AT. What cannot fit in SMTP's 998-octet lines (a run without a space,
    or a run of whitespace, which a line cannot break inside) is refused naming `field_name`."""
    _checked(value)
    if not value.isascii():
        raise MailInputError(field_name, f"the {name} header must be ASCII")
    pieces = _FOLD_POINTS.split(value)
    if not pieces[0] and len(pieces) > 1:  # leading whitespace: keep it on the first line
        pieces[0:2] = [pieces[1]]
    prefix = f"{name}: "
    lines = [prefix + pieces[0], *pieces[1:]]
    longest = max(range(len(lines)), key=lambda index: len(lines[index]))
    if len(lines[longest]) > MAX_LINE_OCTETS:
        text, room = (pieces[0], MAX_LINE_OCTETS - len(prefix)) if longest == 0 else (lines[longest], MAX_LINE_OCTETS)
        raise MailInputError(field_name, _unfoldable(name, text, room))
    return _fold(name, pieces)


def _unfoldable(name: str, text: str, room: int) -> str:
    """Why folded_ascii cannot fit `text` (what one line must carry; `room` octets are left for it): a
    run without a space, or whitespace, inside which a line cannot break (a fold goes before a run of
    spaces and tabs, never inside it, so that no line ends in whitespace that a relay might strip)."""
    word = max((len(run) for run in _WORD_RUNS.findall(text)), default=0)
    blank = max((len(run) for run in _BLANK_RUNS.findall(text)), default=0)
    if word > room or not blank:
        return (f"the {name} header has a run of {word} characters without a space; it must fold into lines of "
                f"at most {MAX_LINE_OCTETS}")
    if len(text) == word + 1 and text[0] in " \t":  # only the one space a folded line starts with
        return (f"the {name} header has a run of {word} characters without a space, {word + 1} with the space "
                f"before it where the line folds; it must fold into lines of at most {MAX_LINE_OCTETS}")
    if blank > room:
        return (f"the {name} header has a run of {blank} spaces or tabs; a header line breaks only before such a "
                f"run, never inside it, so it cannot fold into lines of at most {MAX_LINE_OCTETS}")
    return (f"the {name} header has a run of {blank} spaces or tabs and a run of {word} characters without a "
            f"space that together make {len(text)}; a header line breaks only before a run of spaces or tabs, "
            f"never inside it, so they cannot fold into lines of at most {MAX_LINE_OCTETS}")


def simple(name: str, value: str) -> str:
    """A header whose value the function generated (Date, Message-ID, MIME-Version, Content-ID ...)."""
    return f"{name}: {_checked(value)}\r\n"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date_value(now: datetime) -> str:
    """RFC 5322 date-time of an aware UTC datetime (email.utils.format_datetime without its import)."""
    return f"{_DAYS[now.weekday()]}, {now.day:02d} {_MONTHS[now.month - 1]} {now.year:04d} {now.hour:02d}:{now.minute:02d}:{now.second:02d} +0000"


def new_message_id(domain: str) -> str:
    """`<time.pid.random@domain>`, the shape of email.utils.make_msgid."""
    return f"<{int(time.time() * 100)}.{os.getpid()}.{random.getrandbits(64)}@{domain}>"


# --- bodies -------------------------------------------------------------------------------------


def text_part(subtype: str, body: str) -> Part:
    """A text/* part in UTF-8: 7bit if it is plain printable ASCII with lines under 998 octets,
    else quoted-printable, or base64 when more than about a tenth of it is non-ASCII."""
    normalized = _NEWLINES.sub("\n", body) if "\r" in body else body
    if not normalized.endswith("\n"):
        normalized += "\n"
    data = normalized.encode("utf-8")
    if not _NOT_7BIT_TEXT.search(data) and (len(data) <= MAX_LINE_OCTETS or max(map(len, data.split(b"\n"))) <= MAX_LINE_OCTETS):
        cte, encoded = "7bit", data.replace(b"\n", CRLF)
    elif (len(data) - len(normalized)) * 10 > len(data):
        cte, encoded = "base64", _base64(data)
    else:
        cte, encoded = "quoted-printable", binascii.b2a_qp(data, istext=True).replace(b"\n", CRLF)
    headers = [
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n',
        f"Content-Transfer-Encoding: {cte}\r\n",
    ]
    return Part(headers, encoded)


def binary_part(content_type: str, params: list[tuple[str, str]], disposition: str, filename: str | None, cid: str | None, content: bytes) -> Part:
    """An attachment, base64: Content-Type (with params), Content-Disposition (with filename), Content-ID."""
    headers = [
        parameterized("Content-Type", content_type, params),
        "Content-Transfer-Encoding: base64\r\n",
        parameterized("Content-Disposition", disposition, [("filename", filename)] if filename else []),
    ]
    if cid:
        headers.append(simple("Content-ID", f"<{cid}>"))
    return Part(headers, _base64(content))


def _base64(data: bytes) -> bytes:
    if not data:
        return CRLF  # an empty body line, so the part's blank line and the next delimiter stay apart
    encoded = binascii.b2a_base64(data, newline=False)
    return CRLF.join([encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]) + CRLF


def multipart(subtype: str, children: list[Part], utf8: bool, params: list[tuple[str, str]] = ()) -> Part:
    """multipart/<subtype> of the children, with a random boundary that none of them contains."""
    serialized = [entity_bytes(child, utf8) for child in children]
    while True:
        boundary = "=_" + os.urandom(12).hex()
        delimiter = b"--" + boundary.encode("ascii")
        if not any(delimiter in child for child in serialized):
            break
    body = b"".join([delimiter + CRLF + child for child in serialized]) + delimiter + b"--" + CRLF
    headers = [parameterized("Content-Type", f"multipart/{subtype}", [("boundary", boundary), *params])]
    return Part(headers, body)


def entity_bytes(part: Part, utf8: bool, leading: list[str] = ()) -> bytes:
    """Header lines (after `leading`), a blank line, the body. In a 7-bit message the header section
    is ASCII or this raises: non-ASCII text there was to be encoded."""
    head = "".join([*leading, *part.headers, "\r\n"])
    return head.encode("utf-8" if utf8 else "ascii") + part.body

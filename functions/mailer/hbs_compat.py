"""What makes dotpromptz-handlebars render as Handlebars.js 4.7 (the Firebase extension's engine) does.

The engine is used as installed; this module only prepares what it is given:

- Sources: `rewrite(source)` applies Handlebars.js's whitespace rules (`~` on every kind of tag and
  standalone lines: a port of its compiler/whitespace-control.js over the same tree its parser builds,
  including the indentation a standalone `{{> partial}}` gives every line it renders) and writes the
  result back as a template whose text the engine keeps exactly: `~` marks removed, comments dropped,
  and an empty `{{""}}` before every block, else and partial tag so the engine's own standalone-line
  rule finds nothing to remove. On the way, `x.length` paths become a property lookup (strings have a
  length too), `items.0.name` becomes `items.[0].name`, a lone literal (`{{10}}`) prints nothing, `{{{{raw}}}}` blocks are ordinary blocks over
  literal text, and a `}` right after a tag is the syntax error it is in Handlebars.js. Attachment
  strings follow the extension's JSON-text rules (no standalone lines; `~` stops at a newline).
- Data: `js_value(value)` gives lists `.length` and `.[n]` paths (`{{items.length}}`), prints floats
  as JavaScript does (`1e+21`, `1e-7`, `NaN`, `Infinity`), treats NaN as false in `#if`/`#with`, and
  orders map keys as a JavaScript object does (integer-like keys first, ascending).
- Helpers: `lookup` as Handlebars.js defines it (`{{lookup items "length"}}`, strings, `0` and NaN).

tests/templates/test_conformance.py renders a corpus with Handlebars.js itself and with the function;
its EXPECTED_DIFFERENCES lists the Handlebars.js behaviours deliberately not copied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dotpromptz_handlebars import Handlebars, SafeString

INDENT_HELPER = "__mailer_indent"
PROPERTY_HELPER = "__mailer_property"
# A tag that renders nothing and that the engine never takes as standalone (a string literal that is
# no helper's name prints nothing, in strict mode too).
_BLOCKER = '{{""}}'

# JavaScript's \s (regular expressions without the u flag), which Handlebars.js's rules use.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_PREV_LINE = re.compile(rf"\r?\n[{_JS_SPACE}]*\Z")
_PREV_LINE_ROOT = re.compile(rf"(^|\r?\n)[{_JS_SPACE}]*\Z")
_NEXT_LINE = re.compile(rf"^[{_JS_SPACE}]*?\r?\n")
_NEXT_LINE_ROOT = re.compile(rf"^[{_JS_SPACE}]*?(\r?\n|\Z)")
_LEAD_ALL = re.compile(rf"^[{_JS_SPACE}]+")
# Attachments: the extension compiles JSON.stringify(attachments), where newlines, tabs and other control
# characters are escapes (`\n`), so `~` stops at them and no line is ever standalone.
_JSON_SPACE = _JS_SPACE.replace("\t\n\v\f\r", "")
_JSON_LEAD_ALL = re.compile(rf"^[{_JSON_SPACE}]+")
_JSON_TRAIL_ALL = re.compile(rf"[{_JSON_SPACE}]+\Z")
_LEAD_LINE = re.compile(r"^[ \t]*\r?\n?")
_TRAIL_ALL = re.compile(rf"[{_JS_SPACE}]+\Z")
_TRAIL_LINE = re.compile(r"[ \t]+\Z")


class _Unsupported(Exception):
    """The source is not one this module can rewrite; the engine gets it unchanged (and reports it)."""


_BRACE_AFTER_TAG = "'}' right after a tag's closing braces (Handlebars.js reads '}}}' there and refuses the template)"


# --- tokens: where the engine sees tags (a port of its scanner, without its whitespace passes) ---------


@dataclass
class _Tag:
    body: str
    open: bool = False  # `~` before the body
    close: bool = False  # `~` after it
    triple: bool = False
    raw: bool = False  # {{{{raw}}}} open or close

    @property
    def kind(self) -> str:
        body = self.body
        if self.raw:
            return "raw_close" if body.startswith("/") else "raw_open"
        if self.triple:
            return "mustache"
        if body.startswith("!"):
            return "comment"
        if body == "else" or body.startswith("else ") or body == "^":
            return "else"
        if body.startswith(("#", "^")):
            return "open"
        if body.startswith("/"):
            return "close"
        if body.startswith(">"):
            return "partial"
        return "mustache"

    def written(self) -> str:
        if self.raw:
            # Handlebars.js calls {{{{name}}}} as a block helper (a section when no helper has the name)
            # over literal text: an ordinary block whose text is escaped says the same to the engine.
            return "{{ " + self.body + " }}"
        # Spaces around the body: the engine strips them, and they keep a body that starts with "{"
        # from turning the tag into a triple-stash.
        if self.triple:
            return "{{{ " + self.body + " }}}"
        if self.body == "^":  # Handlebars.js's other spelling of {{else}}; the engine knows only that one
            return "{{ else }}"
        return "{{ " + self.body + " }}"


@dataclass
class _Content:
    value: str
    original: str
    left_stripped: bool = False
    right_stripped: bool = False


def _scan(source: str) -> list[_Tag | _Content]:
    """Text and tags as dotpromptz_handlebars' scanner finds them; text is split where Handlebars.js
    splits its content (before an escaped `\\{{`)."""
    parts: list[_Tag | _Content] = []

    def text(value: str) -> None:
        if value:
            parts.append(_Content(value, value))

    i, n = 0, len(source)
    pending = ""  # text of the current content node
    while i < n:
        start = source.find("{{", i)
        if start < 0:
            pending += source[i:]
            break
        slashes = 0
        j = start - 1
        while j >= i and source[j] == "\\":
            slashes += 1
            j -= 1
        if slashes == 1:
            text(pending + source[i : start - 1])
            pending = "{{"
            i = start + 2
            continue
        if slashes >= 2:
            pending += source[i : start - slashes] + "\\" * (slashes - 1)
        else:
            pending += source[i:start]
        text(pending)
        pending = ""
        if source.startswith("{{{{", start):
            if source.startswith("{{{{/", start):
                raise _Unsupported
            open_end = source.find("}}}}", start + 4)
            if open_end < 0:
                raise _Unsupported
            header = source[start + 4 : open_end].strip()
            if not header:
                raise _Unsupported
            name = header.split()[0]
            close_tag = "{{{{/" + name + "}}}}"
            close_pos = source.find(close_tag, open_end + 4)
            if close_pos < 0:
                raise _Unsupported
            parts.append(_Tag("#" + header, raw=True))
            text(source[open_end + 4 : close_pos])
            parts.append(_Tag("/" + name, raw=True))
            i = close_pos + len(close_tag)
            continue
        comment_end = _long_comment_end(source, start)
        if comment_end is not None:
            body = source[start + 2 : comment_end]
            parts.append(_Tag("!", open=body.startswith("~"), close=body.endswith("~")))
            i = comment_end + 2
            continue
        if source.startswith("{{~{", start) or source.startswith("{{{", start):
            strip_open = source.startswith("{{~{", start)
            body_start = start + (4 if strip_open else 3)
            p1, p2 = source.find("}}}", body_start), source.find("}~}}", body_start)
            if p1 < 0 and p2 < 0:
                raise _Unsupported
            if p1 >= 0 and (p2 < 0 or p1 < p2):
                end, closer, strip_close = p1, 3, False
            else:
                end, closer, strip_close = p2, 4, True
            if not strip_close and source.startswith("}", end + closer):
                raise ValueError(_BRACE_AFTER_TAG)
            if source[body_start:end].strip().startswith(("#", "/", ">", "^", "!", "&", "{")):
                raise ValueError("'{{{' opens a block, partial or comment tag (Handlebars.js refuses the template)")
            parts.append(_Tag(source[body_start:end].strip(), open=strip_open, close=strip_close, triple=True))
            i = end + closer
            continue
        end = source.find("}}", start + 2)
        if end < 0:
            raise _Unsupported
        body = source[start + 2 : end]
        strip_open, strip_close = body.startswith("~"), body.endswith("~")
        body = body[1:] if strip_open else body
        body = body[:-1] if strip_close else body
        if not strip_close and source.startswith("}", end + 2) and body.strip() not in ("else", "^") and not body.startswith("!"):
            raise ValueError(_BRACE_AFTER_TAG)
        parts.append(_Tag(body.strip(), open=strip_open, close=strip_close))
        i = end + 2
    text(pending)
    return parts


def _long_comment_end(source: str, start: int) -> int | None:
    i = start + 2
    if i < len(source) and source[i] == "~":
        i += 1
    if not source.startswith("!--", i):
        return None
    # Handlebars.js's lexer reads the whole tag again for the closing `--}}`, so the opener's own `--` may
    # close it: `{{!--}}` and `{{!---}}` are complete comments.
    search = i + 1
    while True:
        mark = source.find("--", search)
        if mark < 0:
            raise _Unsupported
        j = mark + 2
        if j < len(source) and source[j] == "~":
            j += 1
        if source.startswith("}}", j):
            return j
        search = mark + 1


# --- the tree Handlebars.js's whitespace control walks (its parser's prepareBlock, literally) -----------


@dataclass
class _Program:
    body: list[Any]
    chained: bool = False


@dataclass
class _Leaf:
    tag: _Tag
    indent: str = ""

    @property
    def strip(self) -> dict[str, bool]:
        return {"open": self.tag.open, "close": self.tag.close}


@dataclass
class _Block:
    open_strip: dict[str, bool]
    program: _Program | None
    inverse: _Program | None
    inverse_strip: dict[str, bool] | None
    close_strip: dict[str, bool] | None
    writing: list[Any] = field(default_factory=list)  # tags, programs and chained blocks in source order


def _strip(tag: _Tag | None) -> dict[str, bool]:
    return {"open": tag.open, "close": tag.close} if tag is not None and not tag.raw else {"open": False, "close": False}


def _prepare_block(open_tag: _Tag, program: _Program, inverse_and_program: dict | None, close_strip, inverted: bool) -> _Block:
    inverse = inverse_strip = None
    if inverse_and_program is not None:
        if inverse_and_program["chain"]:
            inverse_and_program["program"].body[0].close_strip = close_strip
        inverse_strip = inverse_and_program["strip"]
        inverse = inverse_and_program["program"]
    if inverted:
        program, inverse = inverse, program
    return _Block(_strip(open_tag), program, inverse, inverse_strip, close_strip)


class _Parser:
    def __init__(self, parts: list[_Tag | _Content]) -> None:
        self.parts = parts
        self.i = 0

    def program(self) -> tuple[_Program, _Tag | None]:
        body: list[Any] = []
        while self.i < len(self.parts):
            part = self.parts[self.i]
            if isinstance(part, _Content):
                body.append(part)
                self.i += 1
                continue
            kind = part.kind
            if kind in ("close", "else", "raw_close"):
                return _Program(body), part
            if kind in ("open", "raw_open"):
                body.append(self.block())
                continue
            body.append(_Leaf(part))
            self.i += 1
        return _Program(body), None

    def block(self) -> _Block:
        open_tag = self.parts[self.i]
        self.i += 1
        program, end = self.program()
        if end is None:
            raise _Unsupported
        writing: list[Any] = [open_tag, program]
        inverse_and_program = None
        if end.kind == "else":
            if open_tag.raw:
                raise _Unsupported
            if open_tag.body.startswith(("#>", "#*")):
                raise ValueError("{{else}} in a partial block or an inline partial (Handlebars.js refuses the template)")
            inverse_and_program, end, chain_writing = self.inverse()
            writing.extend(chain_writing)
        else:
            self.i += 1
        if end.kind not in ("close", "raw_close"):
            raise _Unsupported
        writing.append(end)
        block = _prepare_block(open_tag, program, inverse_and_program, _strip(end), open_tag.body.startswith("^"))
        block.writing = writing
        return block

    def inverse(self) -> tuple[dict, _Tag, list[Any]]:
        """An {{else}} (or an {{else if ...}} chain) up to and including the block's closing tag."""
        else_tag = self.parts[self.i]
        self.i += 1
        program, end = self.program()
        if end is None:
            raise _Unsupported
        if else_tag.body in ("else", "^"):
            if end.kind != "close":
                raise _Unsupported
            self.i += 1
            return {"strip": _strip(else_tag), "program": program, "chain": False}, end, [else_tag, program]
        writing: list[Any] = [else_tag, program]
        sub = None
        if end.kind == "else":
            sub, end, sub_writing = self.inverse()
            writing.extend(sub_writing)
        else:
            self.i += 1
        nested = _prepare_block(else_tag, program, sub, sub["strip"] if sub else None, False)
        return {"strip": _strip(else_tag), "program": _Program([nested], chained=True), "chain": True}, end, writing


# --- Handlebars.js 4.7 compiler/whitespace-control.js --------------------------------------------------


def _is_prev_whitespace(body: list[Any], i: int | None = None, is_root: bool = False) -> bool:
    if i is None:
        i = len(body)
    prev = body[i - 1] if i - 1 >= 0 else None
    sibling = body[i - 2] if i - 2 >= 0 else None
    if prev is None:
        return is_root
    if isinstance(prev, _Content):
        pattern = _PREV_LINE if (sibling is not None or not is_root) else _PREV_LINE_ROOT
        return bool(pattern.search(prev.original))
    return False


def _is_next_whitespace(body: list[Any], i: int | None = None, is_root: bool = False) -> bool:
    if i is None:
        i = -1
    nxt = body[i + 1] if i + 1 < len(body) else None
    sibling = body[i + 2] if i + 2 < len(body) else None
    if nxt is None:
        return is_root
    if isinstance(nxt, _Content):
        pattern = _NEXT_LINE if (sibling is not None or not is_root) else _NEXT_LINE_ROOT
        return bool(pattern.search(nxt.original))
    return False


def _omit_right(body: list[Any], i: int | None = None, multiple: bool = False, lead_all: re.Pattern = _LEAD_ALL) -> None:
    index = 0 if i is None else i + 1
    current = body[index] if 0 <= index < len(body) else None
    if not isinstance(current, _Content) or (not multiple and current.right_stripped):
        return
    original = current.value
    current.value = (lead_all if multiple else _LEAD_LINE).sub("", current.value, count=1)
    current.right_stripped = current.value != original


def _omit_left(body: list[Any], i: int | None = None, multiple: bool = False, trail_all: re.Pattern = _TRAIL_ALL) -> bool:
    index = len(body) - 1 if i is None else i - 1
    current = body[index] if 0 <= index < len(body) else None
    if not isinstance(current, _Content) or (not multiple and current.left_stripped):
        return False
    original = current.value
    current.value = (trail_all if multiple else _TRAIL_LINE).sub("", current.value, count=1)
    current.left_stripped = current.value != original
    return current.left_stripped


class _WhitespaceControl:
    def __init__(self, *, json_text: bool = False) -> None:
        self.root_seen = False
        self.standalone = not json_text  # Handlebars.js's ignoreStandalone, in effect for JSON text
        self.lead_all = _JSON_LEAD_ALL if json_text else _LEAD_ALL
        self.trail_all = _JSON_TRAIL_ALL if json_text else _TRAIL_ALL

    def accept(self, node: Any) -> dict | None:
        if node is None or isinstance(node, _Content):
            return None
        if isinstance(node, _Program):
            self.program(node)
            return None
        if isinstance(node, _Block):
            return self.block(node)
        kind = node.tag.kind
        if kind in ("partial", "comment"):
            return {"inlineStandalone": True, **node.strip}
        return node.strip

    def program(self, program: _Program) -> None:
        is_root = not self.root_seen
        self.root_seen = True
        body = program.body
        for i, current in enumerate(body):
            strip = self.accept(current)
            if not strip:
                continue
            prev_ws = _is_prev_whitespace(body, i, is_root)
            next_ws = _is_next_whitespace(body, i, is_root)
            open_standalone = strip.get("openStandalone") and prev_ws
            close_standalone = strip.get("closeStandalone") and next_ws
            inline_standalone = strip.get("inlineStandalone") and prev_ws and next_ws
            if strip.get("close"):
                _omit_right(body, i, True, self.lead_all)
            if strip.get("open"):
                _omit_left(body, i, True, self.trail_all)
            if self.standalone and inline_standalone:
                _omit_right(body, i)
                if _omit_left(body, i) and isinstance(current, _Leaf) and current.tag.kind == "partial":
                    current.indent = _TRAIL_LINE.search(body[i - 1].original).group()
            if self.standalone and open_standalone:
                _omit_right((current.program or current.inverse).body)
                _omit_left(body, i)
            if self.standalone and close_standalone:
                _omit_right(body, i)
                _omit_left((current.inverse or current.program).body)

    def block(self, block: _Block) -> dict:
        self.accept(block.program)
        self.accept(block.inverse)
        program = block.program or block.inverse
        inverse = block.inverse if block.program else None
        first_inverse = last_inverse = inverse
        if inverse is not None and inverse.chained:
            first_inverse = inverse.body[0].program
            while last_inverse.chained:
                last_inverse = last_inverse.body[-1].program
        close_strip = block.close_strip or {}
        strip = {
            "open": block.open_strip.get("open"),
            "close": close_strip.get("close"),
            "openStandalone": _is_next_whitespace(program.body),
            "closeStandalone": _is_prev_whitespace((first_inverse or program).body),
        }
        if block.open_strip.get("close"):
            _omit_right(program.body, None, True, self.lead_all)
        if inverse is not None:
            inverse_strip = block.inverse_strip or {}
            if inverse_strip.get("open"):
                _omit_left(program.body, None, True, self.trail_all)
            if inverse_strip.get("close"):
                _omit_right(first_inverse.body, None, True, self.lead_all)
            if close_strip.get("open"):
                _omit_left(last_inverse.body, None, True, self.trail_all)
            if self.standalone and _is_prev_whitespace(program.body) and _is_next_whitespace(first_inverse.body):
                _omit_left(program.body)
                _omit_right(first_inverse.body)
        elif close_strip.get("open"):
            _omit_left(program.body, None, True, self.trail_all)
        return strip


# --- writing the result back for the engine ---------------------------------------------------------------
# The output is a list of ("text", value) and ("tag", source) pieces, serialized by _serialize.


def _is_inline_partial(node: Any) -> bool:
    return isinstance(node, _Block) and isinstance(node.writing[0], _Tag) and node.writing[0].body.startswith("#*inline")


def _write(program: _Program, out: list[tuple[str, str]]) -> None:
    # Handlebars.js runs a program's decorators before its body: every {{#*inline}} of a block is
    # defined from the block's start (a call may come first; the last definition of a name wins).
    for node in program.body:
        if _is_inline_partial(node):
            _write_node(node, out)
    for node in program.body:
        if not _is_inline_partial(node):
            _write_node(node, out)


def _write_node(node: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(node, _Content):
        out.append(("text", node.value))
    elif isinstance(node, _Block):
        for item in node.writing:
            if isinstance(item, _Program):
                _write(item, out)
            else:
                out.append(("tag", _BLOCKER))
                out.append(("tag", item.written()))
    else:
        kind = node.tag.kind
        if kind == "comment":
            return
        if kind in ("partial", "else", "close", "open"):
            out.append(("tag", _BLOCKER))
        if kind == "partial" and node.indent:
            out.append(("tag", "{{#" + INDENT_HELPER + ' "' + node.indent + '"}}'))
            out.append(("tag", node.tag.written()))
            out.append(("tag", _BLOCKER))
            out.append(("tag", "{{/" + INDENT_HELPER + "}}"))
        else:
            out.append(("tag", node.tag.written()))


def _serialize(pieces: list[tuple[str, str]]) -> str:
    merged: list[tuple[str, str]] = []
    for kind, value in pieces:
        if kind == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + value)
        elif kind != "text" or value:
            merged.append((kind, value))
    out: list[str] = []
    for index, (kind, value) in enumerate(merged):
        if kind == "text":
            out.append(_literal(value, tag_follows=index + 1 < len(merged)))
        else:
            out.append(value)
    return "".join(out)


def _raw(text: str) -> str:
    return "{{{{raw}}}}" + text + "{{{{/raw}}}}"


def _literal(value: str, *, tag_follows: bool) -> str:
    """Text the engine reads back as `value`. `\\{{` is its only escape, and k backslashes before a tag
    are read as k-1 and the tag, so braces that touch backslashes or a following tag go in a raw block
    (the engine prints {{{{raw}}}} content as written)."""
    out: list[str] = []
    i = 0
    while (j := value.find("{{", i)) >= 0:
        chunk = value[i:j]
        out.append(chunk + "\\" + _raw("{{") if chunk.endswith("\\") else chunk + "\\{{")
        i = j + 2
    rest = value[i:]
    if tag_follows:
        stripped = rest.rstrip("{")
        braces = rest[len(stripped) :]
        out.append(stripped + "\\" if stripped.endswith("\\") else stripped)
        if braces:
            out.append(_raw(braces))
    else:
        out.append(rest)
    return "".join(out)


# --- `.length` of strings: Handlebars.js reads any own property of a value, the engine only paths into
# mappings and lists (lists get `length` from JsArray). A path ending in `.length` becomes a lookup call.

_PARENTS = re.compile(r"\.\.(?:/\.\.)*")
_LENGTH_PATH = re.compile(r"(?P<base>[^\s\"'()=|]+?)[./](?:length|\[length\])")


def _engine_args(text: str) -> list[str]:
    """The engine's split of a tag's arguments (quotes and parentheses nest)."""
    bits: list[str] = []
    buf: list[str] = []
    depth = 0
    quote = ""
    for char in text:
        if quote:
            buf.append(char)
            if char == quote:
                quote = ""
            continue
        if char in "\"'":
            quote = char
            buf.append(char)
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char.isspace() and depth == 0:
            if buf:
                bits.append("".join(buf))
                buf = []
            continue
        buf.append(char)
    if buf:
        bits.append("".join(buf))
    return bits


def _length_value(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token
    if token.startswith("(") and token.endswith(")"):
        return "(" + _length_call(token[1:-1].strip(), name_too=False) + ")"
    if token == "length":
        return f'({PROPERTY_HELPER} this "length")'
    match = _LENGTH_PATH.fullmatch(token)
    if match:
        base = match["base"]
        if _PARENTS.fullmatch(base) or not (base.endswith((".", "/")) or base[0].isdigit()):
            return f'({PROPERTY_HELPER} {base} "length")'
    return token


def _length_call(header: str, *, name_too: bool) -> str:
    """A call's arguments (and its name, when it is a lone path) with `x.length` as a lookup."""
    params = ""
    if " as |" in header:
        header, rest = header.split(" as |", 1)
        params = " as |" + rest
    bits = _engine_args(header.strip())
    out = []
    for index, bit in enumerate(bits):
        if "=" in bit and bit[0] not in "\"'(":
            key, value = bit.split("=", 1)
            out.append(key + "=" + _length_value(value))
        elif index == 0 and not (name_too and len(bits) == 1):
            out.append(bit)
        else:
            out.append(_length_value(bit))
    return " ".join(out) + params


def _with_length_lookups(tag: _Tag) -> None:
    body = tag.body
    if tag.raw or "length" not in body:
        return
    kind = tag.kind
    if kind == "mustache":
        prefix = "&" if body.startswith("&") and not tag.triple else ""
        tag.body = prefix + _length_call(body[len(prefix) :].strip(), name_too=True)
    elif kind == "open" and not body.startswith(("#>", "#*")):
        tag.body = body[0] + _length_call(body[1:].strip(), name_too=False)
    elif kind == "else" and body.startswith(("else if ", "else unless ")):
        tag.body = "else " + _length_call(body[len("else ") :].strip(), name_too=False)


# {{items.0.name}}: Handlebars.js reads a number between two path separators as a segment (its lexer
# takes digits as a NUMBER only before ~, }, a space or `)`, so `items.0` alone is a syntax error there
# too); the engine refuses it. Written as `items.[0].name`, which both read the same way.
_NUMERIC_SEGMENT = re.compile(r"(?<=[./])([0-9]+)(?=[./])")
_QUOTED_OR_BRACKETED = re.compile(r"(\"[^\"]*\"|'[^']*'|\[[^\]]*\])")


def _bracket_numeric_segments(tag: _Tag) -> None:
    if tag.raw or tag.kind == "comment" or not _NUMERIC_SEGMENT.search(tag.body):
        return
    tag.body = "".join(
        chunk if chunk[:1] in "\"'[" else _NUMERIC_SEGMENT.sub(r"[\1]", chunk)
        for chunk in _QUOTED_OR_BRACKETED.split(tag.body)
    )


# {{10}}, {{true}}, {{"text"}}: Handlebars.js takes a lone literal as a helper's name and prints nothing;
# the engine prints numbers and booleans.
_LITERAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|true|false|null|undefined|\"[^\"]*\"|'[^']*'")


def _silence_literal(tag: _Tag) -> None:
    if tag.raw or tag.kind != "mustache":
        return
    body = tag.body[1:].strip() if tag.body.startswith("&") and not tag.triple else tag.body
    if _LITERAL.fullmatch(body):
        tag.body = '""'


def rewrite(source: str, *, attachment: bool = False) -> str:
    """`source` with Handlebars.js's whitespace rules applied, written so the engine keeps its text as is.
    A source this cannot read (a syntax error) is returned unchanged, for the engine to report; a few that
    the engine would accept and Handlebars.js refuses raise ValueError. `x.length` paths become lookups,
    except in an `attachment` string (strict there: a missing value must stay an error), whose whitespace
    rules are those of the extension's JSON text (no standalone lines; `~` stops at a newline)."""
    if "{{" not in source:
        return source
    try:
        parts = _scan(source)
        parser = _Parser(parts)
        program, end = parser.program()
        if end is not None:
            raise _Unsupported
    except (_Unsupported, IndexError):
        return source
    for part in parts:
        if isinstance(part, _Tag):
            _silence_literal(part)
            _bracket_numeric_segments(part)
            if not attachment:
                _with_length_lookups(part)
    _WhitespaceControl(json_text=attachment).program(program)
    out: list[tuple[str, str]] = []
    _write(program, out)
    return _serialize(out)


def _indent_helper(args: list[Any], options: Any) -> SafeString:
    """{{#__mailer_indent "  "}}{{> partial}}{{/__mailer_indent}}: Handlebars.js's standalone partial
    indentation, every line of what the partial renders (runtime.js invokePartial)."""
    indent = args[0] if args else ""
    text = str(options.fn())
    if not indent or text == "":
        return SafeString(text)
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line == "" and index == len(lines) - 1:
            break
        lines[index] = indent + line
    return SafeString("\n".join(lines))


# --- data as Handlebars.js sees JavaScript values ----------------------------------------------------------


def js_number_text(value: float) -> str:
    """Number.prototype.toString() (ECMAScript Number::toString with radix 10)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + int(exponent)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + text


class JsNumber(float):
    """A float that prints as JavaScript prints it (the engine prints a float as str() unless is_integer())."""

    __slots__ = ()

    def __str__(self) -> str:
        return js_number_text(self)

    def is_integer(self) -> bool:
        return False


class JsNaN(JsNumber):
    """NaN: false in #if, #unless and #with as in JavaScript (the engine asks `== 0` and `== ''`)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other == 0 or other == ""

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = float.__hash__


class JsArray(list):
    """A list with a JavaScript array's properties: `length` and index strings (`.[0]`), as the engine
    looks up paths in mappings. Still a list everywhere else: #each, printing, emptiness."""

    __slots__ = ()

    def _index(self, key: str) -> int | None:
        if key.isdigit() and (key == "0" or not key.startswith("0")):
            index = int(key)
            if index < len(self):
                return index
        return None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key == "length" or self._index(key) is not None)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key == "length":
                return len(self)
            index = self._index(key)
            if index is None:
                raise KeyError(key)
            return list.__getitem__(self, index)
        return list.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key] if isinstance(key, str) and key in self else default
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [str(index) for index in range(len(self))]

    def items(self) -> list[tuple[int, Any]]:
        return list(enumerate(self))

    def values(self) -> list[Any]:
        return list(self)


Mapping.register(JsArray)

# JavaScript orders an object's integer-like keys ("0" .. "4294967294", no leading zeros) first, ascending.
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def _js_key_order(keys: list[str]) -> list[str]:
    indexes = [key for key in keys if _ARRAY_INDEX.fullmatch(key) and int(key) < 2**32 - 1]
    if not indexes:
        return keys
    chosen = set(indexes)
    return sorted(indexes, key=int) + [key for key in keys if key not in chosen]


def js_value(value: Any) -> Any:
    """A plain value (already formatted by templates.template_data) as Handlebars.js would see it."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return JsNaN(value) if math.isnan(value) else JsNumber(value)
    if isinstance(value, (list, tuple)):
        return JsArray(js_value(item) for item in value)
    if isinstance(value, Mapping):
        keys = _js_key_order([str(key) for key in value.keys()])
        strings = {str(key): item for key, item in value.items()}
        return {key: js_value(strings[key]) for key in keys}
    return value


def _js_falsy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0 or math.isnan(value)
    return False


def _property_key(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return js_number_text(value)
    return str(value)


def lookup_helper(args: list[Any], options: Any) -> Any:
    """Handlebars.js 4.7's lookup: `obj ? lookupProperty(obj, field) : obj` (own properties only)."""
    obj, key = (list(args) + [None, None])[:2]
    if _js_falsy(obj):
        return obj
    return _property(obj, key)


def property_helper(args: list[Any], options: Any) -> Any:
    """A path step as Handlebars.js takes it: `obj != null ? lookupProperty(obj, field) : obj`."""
    obj, key = (list(args) + [None, None])[:2]
    return None if obj is None else _property(obj, key)


def _property(obj: Any, key: Any) -> Any:
    name = _property_key(key)
    if isinstance(obj, JsArray) or isinstance(obj, Mapping):
        return obj.get(name) if name in obj else None
    if isinstance(obj, str):
        units = obj.encode("utf-16-le", "surrogatepass")  # JavaScript strings count UTF-16 code units
        if name == "length":
            return len(units) // 2
        if _ARRAY_INDEX.fullmatch(name) and int(name) < len(units) // 2:
            index = int(name) * 2
            return units[index : index + 2].decode("utf-16-le", "surrogatepass")
    return None


def register(handlebars: Handlebars) -> Handlebars:
    """The helpers the rewritten sources use, and lookup as Handlebars.js defines it."""
    handlebars.register_helper(INDENT_HELPER, _indent_helper)
    handlebars.register_helper("lookup", lookup_helper)
    handlebars.register_helper(PROPERTY_HELPER, property_helper)
    return handlebars

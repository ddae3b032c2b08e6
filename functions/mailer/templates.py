"""Handlebars templates for mail documents: a template document rendered with `template.data`.

Rendering is dotpromptz-handlebars, a pure-Python Handlebars, given sources and data prepared by
hbs_compat so that templates written for the extension render as its Handlebars.js 4.7.9 renders them:
dotted paths, `{{{raw}}}`, `#if`/`#unless`/`#each`/`#with` with `else`, `../`, `@index`/`@key`/`@first`/
`@last`/`@root`, `lookup`, `.length`, comments, whitespace control and standalone lines. A conformance
test (tests/templates/test_conformance.py) renders a corpus with Handlebars.js itself and requires the
same text; what is deliberately different is listed there. Rules, as in the extension:

- subject and text are rendered without escaping; html and amp escape `& < > " ' ` =` as Handlebars does.
- A variable that is not in the data renders as empty text (Handlebars' rule). Attachments are the
  exception: there a missing variable is an error (the extension compiles them in strict mode), since
  an attachment silently missing its content is worse than no email.
- Partials are template documents with `partial: true`. `{{> footer}}` in a template's html renders the
  partial's html, in its text the partial's text, and so on: one set of partials per field.
- A template field that is absent, null or "" leaves the document's own `message` field in place; any
  other template field replaces it, even when it renders empty. Template attachments replace the
  document's when the template has at least one.
- The `log` helper writes nothing: logs never carry message data.
Values print as in JavaScript: `true`, `1` for 1.0, `1e+21`, `NaN`, lists comma-joined. Timestamps print
as ISO 8601 text and bytes as base64 (so `content: "{{pdf}}"` with `encoding: base64` attaches bytes
data); integers print exactly (the extension's client rounds those above 2^53).
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dotpromptz_handlebars import Handlebars, StrictModeError, TemplateRecursionError

from mailer import hbs_compat
from mailer.addresses import firestore_type_name, one_line, shown
from mailer.document import MailInputError

TEXT_FIELDS = ("subject", "text", "html", "amp")
_ESCAPED_FIELDS = frozenset({"html", "amp"})
# Handlebars.js opens a partial call with `{{>` or `{{#>` (either with `~`); no space is allowed inside.
_PARTIAL_CALL = re.compile(r"\{\{~?#?>")
_MISSING_PARTIAL = re.compile(r"The partial (.+) could not be found")
# Errors that only say the source ended inside something: a prefix of a good template has them too.
_UNFINISHED = ("unclosed block", "unclosed tag", "unclosed raw block")
# Locating a syntax error compiles prefixes of the source; past this many it gives up on a position.
_LOCATE_LIMIT = 400
_SNIPPET_CHARS = 40

Render = Callable[..., str]


class TemplateError(MailInputError):
    """A template that cannot be used; str() is one line, `template: '<name>' in <origin>: ...`."""

    def __init__(self, reason: str) -> None:
        super().__init__("template", reason)


@dataclass(frozen=True)
class TemplateDocument:
    """A template (or partial) document, checked: sources holds the non-empty Handlebars fields."""

    name: str
    origin: str  # where it came from, for messages: "collection 'mail-templates'", "templates/"
    sources: Mapping[str, str]
    attachments: list | None
    partial: bool

    @property
    def label(self) -> str:
        return f"{self.name!r} in {self.origin}"

    @property
    def uses_partials(self) -> bool:
        return any(_PARTIAL_CALL.search(source) for source in self.sources.values())


def parse_template_document(name: str, fields: Mapping[str, Any], origin: str) -> TemplateDocument:
    """Check a template document's fields. Other fields are ignored (apps keep notes in them)."""
    label = f"{name!r} in {origin}"
    sources: dict[str, str] = {}
    for field in TEXT_FIELDS:
        value = fields.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise TemplateError(f"{label}: {field} must be a string, got {firestore_type_name(value)}")
        sources[field] = value
    attachments = fields.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(item, Mapping) for item in attachments):
            raise TemplateError(f"{label}: attachments must be a list of maps, got {firestore_type_name(attachments)}")
        attachments = attachments or None
    partial = fields.get("partial", False)
    if not isinstance(partial, bool):
        raise TemplateError(f"{label}: partial must be true or false, got {firestore_type_name(partial)}")
    return TemplateDocument(name=name, origin=origin, sources=sources, attachments=attachments, partial=partial)


def _environment(*, escape: bool, strict: bool = False) -> Handlebars:
    handlebars = Handlebars(escape_html=escape, strict=strict)
    # The built-in `log` prints its arguments to stdout, which would put message data into the logs.
    handlebars.register_helper("log", lambda args, options: "")
    return hbs_compat.register(handlebars)


def _position(source: str, offset: int) -> str:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    end = source.find("}}", offset)
    snippet = source[offset : end + 2] if 0 <= end < offset + _SNIPPET_CHARS else source[offset : offset + _SNIPPET_CHARS]
    return f"line {line}, column {column} ({shown(one_line(snippet))})"


def _error_offset(source: str, compile_source: Callable[[str], object]) -> int | None:
    """Where the syntax error of `source` is: the tag at fault, found by compiling prefixes that end
    after a `}}`. The first prefix failing with more than "it ended too soon" ends with the bad tag; if
    only that ever happens, the block opened after the last prefix that compiled is the unclosed one."""
    ends = sorted({match.end() for match in re.finditer(r"\}\}", source)} | {len(source)})
    last_clean = 0
    for count, end in enumerate(ends):
        if count >= _LOCATE_LIMIT:
            return None
        try:
            compile_source(source[:end])
        except ValueError as error:
            if str(error).startswith(_UNFINISHED):
                continue
            start = source.rfind("{{", 0, end)
            return start if start >= 0 else None
        last_clean = end
    start = source.find("{{", last_clean)
    return start if start >= 0 else None


def compile_source(handlebars: Handlebars, source: str, where: str) -> Render:
    """Compile one field; a syntax error becomes a TemplateError naming `where` and the position."""

    def compile_rewritten(text: str) -> Render:
        # Only attachments compile strict (see Template); they follow the extension's JSON-text rules.
        return handlebars.compile(hbs_compat.rewrite(text, attachment=handlebars.strict))

    try:
        return compile_rewritten(source)
    except TemplateRecursionError:
        raise TemplateError(f"{where} nests blocks too deeply") from None
    except ValueError as error:
        offset = _error_offset(source, compile_rewritten)
        position = f" at {_position(source, offset)}" if offset is not None else ""
        raise TemplateError(f"{where} has a syntax error{position}: {one_line(str(error))}") from None


class PartialSet:
    """The partial documents of a collection, registered per field (a partial's html serves html...)."""

    def __init__(self, partials: Iterable[TemplateDocument] = ()) -> None:
        self.environments = {field: _environment(escape=field in _ESCAPED_FIELDS) for field in TEXT_FIELDS}
        self.names: set[str] = set()
        # (name, field) -> why that field of the partial cannot be used
        self.broken: dict[tuple[str, str], str] = {}
        for partial in partials:
            self.names.add(partial.name)
            for field, source in partial.sources.items():
                environment = self.environments[field]
                try:
                    compile_source(environment, source, f"partial {partial.label}: {field}")
                except TemplateError as error:
                    self.broken[(partial.name, field)] = error.reason
                    continue
                environment.register_partial(partial.name, hbs_compat.rewrite(source))

    def missing(self, name: str, field: str, origin: str) -> str:
        """Why `{{> name}}` in `field` found nothing."""
        if (name, field) in self.broken:
            return self.broken[(name, field)]
        if name in self.names:
            return f"partial {name!r} has no {field} (a partial serves each field from its own field of the same name)"
        return f"partial {name!r} does not exist in {origin} (partials are documents with partial: true)"


EMPTY_PARTIALS = PartialSet()


@dataclass(frozen=True)
class RenderedTemplate:
    """The message fields a template sets, ready to merge over the document's `message`."""

    fields: dict[str, Any]

    def merged_into(self, message: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**(message or {}), **self.fields}


class Template:
    """A template document compiled against a set of partials; render() may run on many threads."""

    def __init__(self, document: TemplateDocument, partials: PartialSet = EMPTY_PARTIALS) -> None:
        self.document = document
        self.partials = partials
        self._fields = {
            field: compile_source(partials.environments[field], source, f"{document.label}: {field}")
            for field, source in document.sources.items()
        }
        self._attachments = (
            _compile_tree(document.attachments, "attachments", _environment(escape=False, strict=True), document.label)
            if document.attachments
            else None
        )

    def render(self, data: Mapping[str, Any]) -> RenderedTemplate:
        context = template_data(data)
        rendered: dict[str, Any] = {}
        for field, render in self._fields.items():
            rendered[field] = self._run(render, context, field)
        if self._attachments is not None:
            rendered["attachments"] = _render_tree(self._attachments, context, self._run)
        return RenderedTemplate(rendered)

    def _run(self, render: Render, context: dict[str, Any], where: str) -> str:
        label = self.document.label
        try:
            return render(context)
        except StrictModeError as error:
            raise TemplateError(
                f"{label}: {where} uses {{{{{error.path}}}}}, which template.data does not define "
                "(attachments must not render a missing value)"
            ) from None
        except TemplateRecursionError:
            raise TemplateError(f"{label}: {where} nests partials or blocks too deeply (a partial that includes itself?)") from None
        except ValueError as error:
            missing = _MISSING_PARTIAL.fullmatch(str(error))
            if missing and where in TEXT_FIELDS:
                reason = self.partials.missing(missing.group(1), where, self.document.origin)
                raise TemplateError(f"{label}: {where} uses {{{{> {missing.group(1)}}}}}, but {reason}") from None
            raise TemplateError(f"{label}: {where}: {one_line(str(error))}") from None


@dataclass(frozen=True)
class _Compiled:
    render: Render
    where: str


def _compile_tree(value: Any, where: str, handlebars: Handlebars, label: str) -> Any:
    """Attachments with every string compiled as a template (keys stay as written)."""
    if isinstance(value, str):
        return _Compiled(compile_source(handlebars, value, f"{label}: {where}"), where)
    if isinstance(value, Mapping):
        return {key: _compile_tree(item, f"{where}.{key}", handlebars, label) for key, item in value.items()}
    if isinstance(value, list):
        return [_compile_tree(item, f"{where}[{index}]", handlebars, label) for index, item in enumerate(value)]
    return value


def _render_tree(value: Any, context: dict[str, Any], run: Callable[[Render, dict[str, Any], str], str]) -> Any:
    if isinstance(value, _Compiled):
        return run(value.render, context, value.where)
    if isinstance(value, dict):
        return {key: _render_tree(item, context, run) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_tree(item, context, run) for item in value]
    return value


def template_data(value: Any) -> Any:
    """`template.data` as Handlebars should see it: timestamps as ISO 8601, bytes as base64, and values
    that behave as JavaScript's do in templates (see hbs_compat.js_value)."""
    return hbs_compat.js_value(_formatted(value))


def _formatted(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): _formatted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_formatted(item) for item in value]
    return value

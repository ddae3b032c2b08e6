"""Templates render as Handlebars.js renders them for the Firebase extension, checked against Handlebars.js.

A corpus (the extension's documented examples, every template in templates/, edge cases) is rendered by
npm `handlebars` at the version the extension locks (tests/templates/hbs, installed by `make test`), set
up as the extension's templates.ts sets it up, and by the function's renderer (mailer.templates). Both
get the same data: `template.data` as the function formats Firestore values (mailer.templates.
template_data: timestamps as ISO 8601, bytes as base64). Subject, text, html, amp and attachments must be
identical, or the case is in EXPECTED_DIFFERENCES with the reason and both outputs; cases named error-*
must fail on both sides, and no other case may fail in Handlebars.js. One node process serves the whole
session (JSON lines over stdin/stdout).
"""

from __future__ import annotations

import datetime
import json
import math
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds

from infra.templates import load_template_files
from mailer.templates import PartialSet, Template, TemplateError, parse_template_document, template_data

ROOT = Path(__file__).resolve().parents[2]
HBS = ROOT / "tests" / "templates" / "hbs"
RUNNER = HBS / "runner.js"
FIELDS = ("subject", "text", "html", "amp")
ORIGIN = "collection 'mail-templates'"


# --- the two renderers --------------------------------------------------------------------------------


def _wire(value: Any) -> Any:
    """JSON for the runner: non-finite numbers as {"$number": ...} (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$number": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wire(item) for item in value]
    return value


class HandlebarsJs:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["node", str(RUNNER)], cwd=HBS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )

    def ask(self, request: dict) -> dict:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the Handlebars.js runner exited"
        return json.loads(line)

    def render(self, case: Case) -> dict:
        request = {
            "fields": case.sources,
            "partials": case.partials,
            "attachments": case.attachments,
            "data": _wire(template_data(case.data)),
        }
        return self.ask(request)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def handlebars_js():
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the conformance test needs it (as `make test` does)")
    assert (HBS / "node_modules" / "handlebars").is_dir(), (
        "tests/templates/hbs/node_modules is missing: run `make tests/templates/hbs/node_modules/.installed`"
    )
    runner = HandlebarsJs()
    yield runner
    runner.close()


def function_render(case: Case) -> dict:
    partials = PartialSet(
        parse_template_document(name, {"partial": True, **fields}, ORIGIN) for name, fields in case.partials.items()
    )
    document = {**case.sources, **({"attachments": case.attachments} if case.attachments else {})}
    try:
        rendered = Template(parse_template_document("case", document, ORIGIN), partials).render(case.data).fields
    except TemplateError as error:
        return {"error": str(error)}
    result: dict[str, Any] = {"fields": {key: value for key, value in rendered.items() if key in FIELDS}}
    if "attachments" in rendered:
        result["attachments"] = rendered["attachments"]
    return result


# --- the corpus ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    sources: dict[str, str]
    data: dict[str, Any]
    partials: dict[str, dict[str, str]] = field(default_factory=dict)
    attachments: list[dict[str, Any]] | None = None


UTC = datetime.timezone.utc
# Firestore values as the function decodes them. Both renderers get them as mailer.templates.template_data
# formats them (timestamps as ISO 8601, bytes as base64, a geo point as a map, a reference as its path): the
# corpus compares the engines. The extension hands Handlebars the Node.js client's objects instead (a
# Timestamp prints its valueOf() sort key, a GeoPoint hides latitude/longitude behind prototype getters
# Handlebars 4.7 refuses to read), which the function deliberately does not copy.
DATA: dict[str, Any] = {
    "name": "Ada",
    "user": {"name": "Ada Lovelace", "address": {"city": "Turin"}, "tags": ["admin", "beta"]},
    "items": [{"name": "tea", "price": 3}, {"name": "cake", "price": 4.5}],
    "tags": ["x", "y", "z"],
    "empty": [],
    "nested": [[1, 2], [3]],
    "prices": {"tea": 3, "cake": 4.5},
    "numeric_keys": {"b": "B", "10": "ten", "2": "two", "01": "zero-one", "a": "A"},
    "zero": 0,
    "one": 1,
    "neg": -7,
    "float": 2.5,
    "whole_float": 2.0,
    "third": 1 / 3,
    "tiny": 1e-7,
    "small": 0.000001,
    "e16": 1e16,
    "huge": 1e21,
    "max": 1.7976931348623157e308,
    "negzero": -0.0,
    "nan": float("nan"),
    "inf": float("inf"),
    "ninf": float("-inf"),
    "safe_big": 2**53 - 1,
    "big": 2**63 - 1,
    "yes": True,
    "no": False,
    "nothing": None,
    "blank": "",
    "space": " ",
    "hostile": "<a href=\"x\" title='y'>Tom & Jerry `tick` a=b</a>",
    "multiline": "line one\nline two",
    "unicode": "héllo wörld 😀",
    "when": DatetimeWithNanoseconds(2026, 12, 1, 13, 5, 7, nanosecond=123456789, tzinfo=UTC),
    "day": datetime.datetime(2026, 1, 2, tzinfo=UTC),
    "pdf": b"%PDF-1.4\n",
    "where": {"latitude": 45.07, "longitude": 7.68},  # a geo point, as the function decodes it
    "ref": "projects/p/databases/(default)/documents/users/ada",  # a reference: its document name
}

# Each partial has all four fields: the edge cases below render every field, and a field calls the
# partial's field of the same name.
PARTIALS = {
    "footer": {"subject": "[{{name}}]", "text": "--\nBye {{name}}\n", "html": "<p>Bye {{name}}</p>\n", "amp": "<p>{{name}}</p>"},
    "lines": dict.fromkeys(FIELDS, "first {{name}}\n<li>second</li>\n"),
    "item": dict.fromkeys(FIELDS, "{{name}}=<{{price}}>"),
    "value": dict.fromkeys(FIELDS, "{{multiline}}\n"),
}


def edge(case_id: str, source: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Case:
    """An edge case rendered into every field: subject and text unescaped, html and amp escaped."""
    return Case(case_id, {field_name: source for field_name in FIELDS}, DATA if data is None else data, **kwargs)


EDGES = [
    # helpers
    edge("if", "{{#if yes}}Y{{/if}}{{#if no}}N{{/if}}{{#if zero}}0{{/if}}{{#if blank}}b{{/if}}{{#if empty}}e{{/if}}{{#if prices}}p{{/if}}"),
    edge("if-else", "{{#if no}}yes{{else}}no{{/if}}"),
    edge("if-include-zero", "{{#if zero includeZero=true}}zero shown{{/if}}"),
    edge("if-else-chain", "{{#if no}}A{{else if nothing}}B{{else if one}}C{{else}}D{{/if}}"),
    edge("caret-else", "{{#if no}}a{{^}}b{{/if}} {{#each empty}}x{{^}}none{{/each}}\n{{#if no}}\na\n{{^}}\nc\n{{/if}}\n"),
    edge("if-else-unless-chain", "{{#if no}}A{{else unless yes}}B{{else}}C{{/if}}"),
    edge("unless", "{{#unless no}}shown{{/unless}}{{#unless yes}}hidden{{else}}else{{/unless}}"),
    edge("each-array", "{{#each tags}}{{@index}}:{{this}}{{#if @first}}(first){{/if}}{{#if @last}}(last){{/if}} {{/each}}"),
    edge("each-object", "{{#each prices}}{{@key}}={{this}} #{{@index}} {{#if @first}}F{{/if}}{{#if @last}}L{{/if}}; {{/each}}"),
    edge("each-else", "{{#each empty}}x{{else}}nothing{{/each}} {{#each nothing}}x{{else}}none{{/each}}"),
    edge("each-parent", "{{#each items}}{{name}} from {{../name}} at {{@root.user.address.city}}; {{/each}}"),
    edge("each-nested", "{{#each nested}}[{{#each this}}{{@../index}}.{{@index}}={{this}} {{/each}}]{{/each}}"),
    edge("each-block-params", "{{#each items as |item i|}}{{i}}:{{item.name}} {{/each}}"),
    edge("each-numeric-keys", "{{#each numeric_keys}}{{@key}}={{this}},{{/each}}"),
    edge("each-string-and-number", "{{#each name}}x{{else}}not a list{{/each}}|{{#each one}}x{{else}}n{{/each}}"),
    edge("with", "{{#with user}}{{name}} in {{address.city}} ({{../name}}){{/with}}"),
    edge("with-else", "{{#with nothing}}x{{else}}no one{{/with}}{{#with empty}}x{{else}} empty{{/with}}"),
    edge("with-block-param", "{{#with user.address as |a|}}{{a.city}}{{/with}}"),
    edge("lookup", "{{lookup prices 'tea'}} {{lookup tags 1}} {{lookup tags one}} {{lookup user 'nobody'}} {{lookup zero 'x'}}"),
    edge("lookup-length", "{{lookup tags 'length'}} {{lookup name 'length'}} {{lookup unicode 'length'}} {{lookup empty 'length'}}"),
    edge("lookup-in-each", "{{#each tags}}{{lookup ../prices 'tea'}}{{/each}}"),
    edge("sections", "{{#tags}}<{{this}}>{{/tags}}{{#user}}{{name}}{{/user}}{{#yes}}T{{/yes}}{{#no}}F{{else}}not{{/no}}{{^empty}}none{{/empty}}"),
    edge("log-is-silent", "a{{log name}}b"),
    edge("comments", "a{{! one }}b{{!-- two }} --}}c"),
    # paths
    edge("paths", "{{user.name}} {{user/address/city}} {{this.name}} {{./name}} {{[name]}} {{user.[address].city}}"),
    edge("array-index", "{{tags.[0]}} {{tags.[2]}} {{tags.[9]}} {{items.[1].name}} {{nested.[1].[0]}}"),
    edge("length", "{{tags.length}} {{empty.length}} {{items.length}} {{user.tags.length}} {{nested.[0].length}}"),
    edge("length-in-blocks", "{{#if tags.length}}{{tags.length}} tags{{/if}}{{#if empty.length}}x{{else}} no items{{/if}}"),
    edge("length-in-each", "{{#each nested}}{{this.length}},{{length}};{{/each}}{{#with tags}}{{length}}{{/with}}"),
    edge("length-root", "{{@root.tags.length}} {{#each items}}{{@root.items.length}}{{/each}}"),
    edge("length-of-a-string", "{{name.length}} {{blank.length}} {{#if name.length}}named{{/if}} {{user.name.length}}"),
    edge("length-bare", "{{#each tags}}{{length}}{{/each}} {{#with name}}{{length}}{{/with}} {{#with user}}{{#each tags}}{{../../name.length}}{{../length}}{{/each}}{{/with}} {{#with prices}}{{length}}{{/with}}"),
    edge("length-as-argument", "{{#with name}}{{#if length}}has {{length}}{{/if}}{{/with}} {{lookup tags length}}"),
    edge("length-of-other-things", "[{{prices.length}}][{{one.length}}][{{nothing.length}}][{{yes.length}}]"),
    edge("numeric-path-segments", "{{items.0.name}}|{{nested.1.[0]}}|{{#each items}}{{../items.1.name}}{{/each}}|{{#if items.0.price}}p{{/if}}|"
         "{{items.0.name.length}}|{{user/tags/1.x}}|{{#items.0.name}}[{{this}}]{{/items.0.name}}|{{lookup prices 't.0.a'}}|{{nested.1.0.x}}"),
    edge("length-bracketed", "{{user.name.[length]}} {{tags.[length]}} {{#if name.[length]}}named{{/if}}"),
    edge("error-numeric-last-segment", "{{items.0}}"),
    edge("missing", "[{{nobody}}][{{user.nobody.deeper}}][{{tags.[7].x}}][{{nothing.x}}][{{../up}}]"),
    # values
    edge("numbers", "{{zero}} {{one}} {{neg}} {{float}} {{whole_float}} {{third}} {{safe_big}}"),
    edge("numbers-javascript-format", "{{tiny}} {{small}} {{e16}} {{huge}} {{max}} {{negzero}} {{nan}} {{inf}} {{ninf}}"),
    edge("numbers-truth", "{{#if nan}}t{{else}}f{{/if}}{{#if negzero}}t{{else}}f{{/if}}{{#unless nan}}u{{/unless}}{{#with nan}}w{{else}}e{{/with}}"),
    edge("numbers-in-lists", "{{prices}} {{nested}} {{items}}"),
    edge("booleans-null", "{{yes}} {{no}} [{{nothing}}] [{{blank}}] {{#if nothing}}x{{else}}null is false{{/if}}"),
    edge("objects", "{{user}} {{where}} {{user.tags}}"),
    edge("dates-bytes-geo-refs", "{{when}} | {{day}} | {{pdf}} | {{where.latitude}},{{where.longitude}} | {{ref}}"),
    edge("unicode", "{{unicode}} {{multiline}}"),
    # escaping
    edge("escaping", "{{hostile}} | {{{hostile}}} | {{&hostile}}"),
    edge("escaping-in-blocks", "{{#each tags}}{{../hostile}}{{/each}}{{#with user}}{{{../hostile}}}{{/with}}"),
    edge("escaped-mustache", "\\{{name}} \\\\{{name}} literal \\{{{name}}}"),
    edge("braces-near-tags", "{ {{name}} }{{{name}}}{ {{~name}} }\\{{ {{~name~}} {\\ {{~name}}"),
    edge("backslashes", r"a\\{{name}} b\{{name}} {{{{yes}}}}c\{{d}} \\{{e}}{{{{/yes}}}} f\ {{~name}} g\\\{{name}}"),
    edge("literal-mustaches", "[{{10}}][{{-1}}][{{1.5}}][{{true}}][{{false}}][{{null}}][{{undefined}}][{{'s'}}][{{{2}}}][{{&3}}]"),
    edge("unicode-spaces-and-tilde", "a\u00a0{{~name~}}\u0085b\u3000{{~name}}\ufeff {{~name}}"),
    edge("subexpressions", "{{lookup (lookup items 0) 'name'}} {{#each (lookup user 'tags')}}{{this}}{{/each}}{{#if (lookup user 'name')}}!{{/if}}"),
    edge("string-literals", "{{lookup prices \"tea\"}}{{#if 'x'}}q{{/if}}{{lookup prices \"{{\"}}{{lookup prices 'a}b'}}"),
    # whitespace control and standalone lines
    edge("standalone-blocks", "a\n{{#if yes}}\nyes\n{{/if}}\nb\n  {{#each tags}}  \n  - {{this}}\n  {{/each}}\nend\n"),
    edge("standalone-else", "a\n{{#if no}}\nyes\n{{else}}\nno\n{{/if}}\nb\n"),
    edge("standalone-crlf", "a\r\n{{#if yes}}\r\nyes\r\n{{/if}}\r\nb\r\n"),
    edge("standalone-at-edges", "{{#if yes}}\nfirst\n{{/if}}"),
    edge("standalone-nested", "{{#if yes}}\n  {{#each tags}}\n    {{this}}\n  {{/each}}\n{{/if}}\n"),
    edge("standalone-comment", "a\n{{! note }}\nb\n  {{!-- long --}}  \nc"),
    edge("standalone-sections", "a\n{{^empty}}\nnone\n{{/empty}}\n{{#tags}}\n{{.}}\n{{/tags}}\n"),
    edge("standalone-chain", "a\n{{#if no}}\nA\n{{else if yes}}\nB\n{{else}}\nC\n{{/if}}\nz\n"),
    edge("not-standalone", "a {{#if yes}}\nyes\n{{/if}} b\n{{#if yes}}x{{/if}}\n"),
    edge("tilde-open-before", "a\n{{~#if yes}}\nyes\n{{/if}}\nb"),
    edge("tilde-open-after", "a\n{{#if yes~}}\n  yes\n{{/if}}\nb"),
    edge("tilde-close-before", "a\n{{#if yes}}\nyes\n{{~/if}}\nb"),
    edge("tilde-close-after", "a\n{{#if yes}}\nyes\n{{/if~}}\n  b"),
    edge("tilde-everywhere", "a\n{{~#if yes~}}\n  yes  \n{{~/if~}}\n b"),
    edge("tilde-else", "{{#if no}}\nyes\n{{~else~}}\n  no  \n{{/if}}|{{#if no}} a {{~else}} b {{/if}}|{{#if no}} a {{else~}} b {{/if}}"),
    edge("tilde-else-chain", "{{#if no}} A {{~else if yes~}} B {{~else~}} C {{~/if}}|"),
    edge("tilde-each-list", "<ul>\n  {{#each tags~}}\n    <li>{{this}}</li>\n  {{~/each}}\n</ul>"),
    edge("tilde-each-outside", "<ul>\n  {{~#each tags}}\n    <li>{{this}}</li>\n  {{/each~}}\n</ul>"),
    edge("tilde-mustache", "a  {{~name~}}  b {{name~}}\n\n  {{~name}} c\t{{~{name}~}}\td {{~&name~}} e"),
    edge("tilde-comment", "a {{~! gone ~}} b\n{{~!-- long --~}}\nc"),
    edge("tilde-section", "a {{~#tags~}} {{.}} {{~/tags~}} b {{~^empty~}} none {{~/empty~}} c"),
    edge("tilde-only-whitespace", "a{{~#if yes~}} \n\n {{~/if~}}b"),
    edge("blank-lines", "\n{{#if yes}}\n\n{{/if}}\n\n"),
    edge("adjacent-blocks-one-line", "{{#if yes}}a{{/if}}\n{{#if yes}}b{{/if}}\n"),
    edge("trailing-space-lines", "x\n  {{#if yes}}  \n  y  \n  {{/if}}  \n"),
    # partials
    edge("partial", "Hello\n{{> footer}}", partials=PARTIALS),
    edge("partial-inline", "Hello {{> footer}} there", partials=PARTIALS),
    edge("partial-standalone-indented", "<ul>\n  {{> lines}}\n</ul>\n", partials=PARTIALS),
    edge("partial-indent-in-each", "{{#each items}}\n  {{> item}}\n{{/each}}\n", partials=PARTIALS),
    edge("partial-indents-data-lines", "x\n    {{> value}}\ny", partials=PARTIALS),
    edge("partial-context", "{{#each items}}{{> item}};{{/each}} {{> item items.[1]}} {{> item name='x' price=one}}", partials=PARTIALS),
    edge("partial-tilde", "a\n{{~> footer}}\nb {{> footer ~}}\n c", partials=PARTIALS),
    edge("partial-tilde-indented", "a\n  {{~> lines}}\nb", partials=PARTIALS),
    edge("partial-block-fallback", "{{#> nowhere}}fallback {{name}}{{/nowhere}}", partials=PARTIALS),
    edge("partial-block", "{{#> footer}}ignored{{/footer}}", partials=PARTIALS),
    edge("inline-partial", "{{#*inline \"greet\"}}Hi {{name}}{{/inline}}{{> greet}}!"),
    edge("inline-partial-standalone", "{{#*inline \"row\"}}\n  <td>{{name}}</td>\n{{/inline}}\n<tr>\n  {{> row}}\n  {{~> row ~}}\n</tr>\n"),
    edge("inline-partial-order", "{{> early}}{{#*inline \"early\"}}E{{/inline}} {{#*inline \"twice\"}}1{{/inline}}{{> twice}}{{#*inline \"twice\"}}2{{/inline}}{{> twice}}"),
    edge("partial-dynamic", "{{> (lookup . 'which')}}", {**DATA, "which": "footer"}, partials=PARTIALS),
    # errors: a template that fails in Handlebars.js fails here too
    edge("error-missing-helper", "{{shout name}}"),
    edge("error-missing-partial", "{{> nowhere}}"),
    edge("error-unclosed-block", "{{#if yes}}open"),
    edge("error-mismatched-close", "{{#if yes}}x{{/each}}"),
    edge("error-if-without-argument", "{{#if}}x{{/if}}"),
    edge("error-brace-after-tag", "{{name}}}"),
    edge("error-brace-after-triple", "{{{name}}}}"),
    edge("error-tag-in-tag", "{{ name {{one}}"),
    edge("error-else-in-partial-block", "{{#> footer}}a{{else}}b{{/footer}}"),
    edge("error-else-in-inline-partial", "{{#*inline \"x\"}}a{{else}}b{{/inline}}"),
    edge("error-block-in-triple", "{{{#if yes}}}x{{/if}}"),
    edge("else-if-length", "{{#if no}}a{{else if name.length}}{{name.length}}{{else}}c{{/if}}"),
    edge("error-tag-in-triple", "{{{! note }} {{name}}}"),
    edge("comment-dashes-only", "a {{!--}} b {{!---}} c\n{{~!--~}}\n d {{!-- x --}}{{!----}}e\n{{!--}}\nf"),
    edge("braces-in-comments", "{{! {{name}} }}{{!-- {{{name}}} }} --}}ok"),
    edge("brace-after-tilde-else-comment", "{{name~}}} {{#if no}}{{else}}}{{/if}} {{! c }}}"),
    edge("raw-block-missing", "a{{{{nowhere}}}}{{name}}{{{{/nowhere}}}}b"),
    # Handlebars.js quirks we do not copy (see EXPECTED_DIFFERENCES)
    edge("numbers-adjacent", "{{one}}{{float}}"),
    edge("numbers-64-bit", "{{big}}"),
    edge("raw-block", "a {{{{raw}}}} {{name}} {{{{/raw}}}} b {{{{yes}}}}\n  {{name}}\n{{{{/yes}}}}\n"),
]

# The Firebase extension's documented examples (docs/firestore-send-email/use-handlebars-template.md and
# the SendGrid template of its e2e tests).
FOLLOWING = {
    "subject": "@{{username}} is now following you!",
    "html": "Just writing to let you know that <code>@{{username}}</code> ({{name}}) is now following you.",
}
FOLLOWING_DATA = {"username": "ada", "name": "Ada Lovelace", "imagePath": "https://example.com/path/to/file/image-name.jpg"}
EXTENSION_FOOTER = {
    "html": "<p>This mail was sent by ExampleApp, Inc. <a href='https://example.com/unsubscribe'>Unsubscribe</a></p>",
    "text": "This mail was sent by ExampleApp, Inc. Unsubscribe here: https://example.com/unsubscribe",
}
SENDGRID_TEMPLATE = {
    "subject": "Test Subject",
    "text": "Hello {{userName}},\n\nThank you for your order:\n{{orderText}}\n\nYour order will be processed by "
    "{{doctorName}}.\n\nBusiness Hours:\n{{openingHours}}\n\nAddress:\n{{address}}\n\nBest regards,\nThe Team",
    "html": "\n<!DOCTYPE html>\n<html>\n<body>\n  <p>Hello {{userName}},</p>\n  <p>Thank you for your order: {{orderText}}</p>\n"
    "  <p>Your order will be processed by {{doctorName}}.</p>\n  <p>Business Hours: {{openingHours}}</p>\n"
    "  <p>Address: {{address}}</p>\n  <p>Best regards,<br>The Team</p>\n</body>\n</html>",
}
SENDGRID_DATA = {
    "address": "123 Test Street, Test City",
    "doctorName": "Dr. Test",
    "openingHours": "Mon-Fri: 9:00-17:00",
    "orderText": "Test order items",
    "userName": "Test User",
}
EXTENSION_EXAMPLES = [
    Case("extension-following", FOLLOWING, FOLLOWING_DATA, attachments=[{"filename": "{{username}}.jpg", "path": "{{imagePath}}"}]),
    Case("extension-following-hostile-name", FOLLOWING, {**FOLLOWING_DATA, "name": "Ada <\"Countess\"> & Co"}),
    Case(
        "extension-partial-footer",
        {field_name: "<p>This is my main template content, but it will use a common footer.</p>\n\n{{> footer }}" for field_name in ("html", "text")},
        {},
        partials={"footer": EXTENSION_FOOTER},
    ),
    Case("extension-sendgrid-order", SENDGRID_TEMPLATE, SENDGRID_DATA),
    Case(
        "attachments-json-whitespace",
        {"subject": "x"},
        DATA,
        attachments=[
            {
                "filename": "{{name}}-{{tags.length}}.csv",
                "content": "Name,Tag\n{{#each tags}}\n{{../name}},{{this}}\n{{/each}}\n  {{~name~}}  \n end {{~#if yes~}} \t ok \n{{~/if}}",
            }
        ],
    ),
    Case("extension-attachments-escaped", {"subject": "x"}, {"name": "Tom & Jerry"}, attachments=[{"filename": "{{name}}.txt", "content": "{{name}}"}]),
]


def project_templates() -> list[Case]:
    """Every template in templates/, with its sample data, with none, and with every optional value."""
    files = load_template_files(ROOT / "templates")
    partials = {name: {k: v for k, v in t.document.items() if k in FIELDS} for name, t in files.items() if t.document.get("partial")}
    cases = []
    for name, template in files.items():
        if template.document.get("partial"):
            continue
        sources = {key: value for key, value in template.document.items() if key in FIELDS}
        attachments = template.document.get("attachments")
        full = {**template.sample_data, "expiresInMinutes": 30, "supportEmail": "help+<ops>@acme.example"}
        for suffix, data in (("sample", template.sample_data), ("no-data", {}), ("all-values", full)):
            cases.append(Case(f"templates/{name}.yaml:{suffix}", sources, data, partials, attachments))
    return cases


CORPUS = [*EXTENSION_EXAMPLES, *project_templates(), *EDGES]


@dataclass(frozen=True)
class Difference:
    reason: str
    handlebars_js: dict  # what Handlebars.js gives (the runner's answer)
    function: dict  # what the function gives


EXPECTED_DIFFERENCES = {
    "numbers-adjacent": Difference(
        "Handlebars.js compiles unescaped outputs that start a template or block into one JavaScript `+` "
        "expression, so numbers and booleans there are added, not printed side by side; the extension "
        "compiles subject and text without escaping, so `{{one}}{{float}}` sends 3.5 there (html and amp "
        "escape, and print 12.5). The function prints 12.5 in every field, as the template says.",
        {"fields": {"subject": "3.5", "text": "3.5", "html": "12.5", "amp": "12.5"}},
        {"fields": {"subject": "12.5", "text": "12.5", "html": "12.5", "amp": "12.5"}},
    ),
    "numbers-64-bit": Difference(
        "Firestore integers are 64-bit; the extension's Node.js client reads them as JavaScript numbers, "
        "so above 2^53 it prints the nearest double. The function prints the stored integer.",
        {"fields": dict.fromkeys(FIELDS, "9223372036854776000")},
        {"fields": dict.fromkeys(FIELDS, "9223372036854775807")},
    ),
    "extension-attachments-escaped": Difference(
        "The extension renders attachments as one JSON text compiled with HTML escaping, so `&` in data "
        "becomes `&amp;` in file names and content (and a `\"` breaks the JSON). The function renders each "
        "attachment string without escaping.",
        {"fields": {"subject": "x"}, "attachments": [{"filename": "Tom &amp; Jerry.txt", "content": "Tom &amp; Jerry"}]},
        {"fields": {"subject": "x"}, "attachments": [{"filename": "Tom & Jerry.txt", "content": "Tom & Jerry"}]},
    ),
}


# --- random templates: blocks, else chains, sections, partials, comments, escapes and ~ in any mix -------

# Expressions whose value is text (or nothing) wherever they appear: Handlebars.js's number-adding quirk
# (EXPECTED_DIFFERENCES "numbers-adjacent") cannot show with them, so they may go unescaped anywhere.
TEXTUAL = ["name", "user.name", "hostile", "multiline", "tags.[1]", "../name", "nothing", "this", "user.address.city", "this.name"]
# Numbers and booleans too: only escaped ({{ }} in html), where Handlebars.js prints them side by side.
VALUES = [*TEXTUAL, "one", "float", "tags.length", "name.length", "length", "../length", "this.length", "@index", "@first",
          "@last", "@key", "lookup prices 'tea'", "tiny", "nan", "yes"]
SPACES = ["", " ", "\n", "  \n", "\n  ", "\r\n", "\t", "x", "\n\n", " y\n", "{", "}", "\\", "\\{{name}}"]


def random_template(rng: random.Random, escaped: bool) -> str:
    def tilde() -> str:
        return "~" if rng.random() < 0.3 else ""

    def mustache() -> str:
        if rng.random() < 0.2:
            return "{{%s{%s}%s}}" % (tilde(), rng.choice(TEXTUAL), tilde())
        return "{{%s%s%s}}" % (tilde(), rng.choice(VALUES if escaped else TEXTUAL), tilde())

    def block(depth: int) -> str:
        kind = rng.choice(["if", "unless", "each", "with", "section", "inverse"])
        argument = {"if": ["yes", "no", "tags.length", "nan", "zero", "name.length"], "unless": ["yes", "no"],
                    "each": ["tags", "prices", "items", "empty", "nested"], "with": ["user", "nothing", "name"],
                    "section": ["tags", "yes", "no", "user"], "inverse": ["empty", "tags"]}[kind]
        name = rng.choice(argument)
        if kind in ("section", "inverse"):
            sigil = "#" if kind == "section" else "^"
            opening, closing = "{{%s%s%s%s}}" % (tilde(), sigil, name, tilde()), "{{%s/%s%s}}" % (tilde(), name, tilde())
        else:
            opening, closing = "{{%s#%s %s%s}}" % (tilde(), kind, name, tilde()), "{{%s/%s%s}}" % (tilde(), kind, tilde())
        body = sequence(depth + 1)
        if kind not in ("section", "inverse") and rng.random() < 0.4:
            if kind == "if" and rng.random() < 0.4:
                body += "{{%selse if %s%s}}" % (tilde(), rng.choice(argument), tilde()) + sequence(depth + 1)
            body += rng.choice(["{{%selse%s}}", "{{%s^%s}}"]) % (tilde(), tilde()) + sequence(depth + 1)
        return opening + body + closing

    def sequence(depth: int) -> str:
        out = []
        for _ in range(rng.randint(0, 4)):
            out.append(rng.choice(SPACES))
            roll = rng.random()
            if roll < 0.35:
                out.append(mustache())
            elif roll < 0.55 and depth < 3:
                out.append(block(depth))
            elif roll < 0.62:
                out.append("{{%s! note %s}}" % (tilde(), tilde()))
            elif roll < 0.72:
                out.append("{{%s> %s%s}}" % (tilde(), rng.choice(list(PARTIALS)), tilde()))
            elif roll < 0.76 and depth < 3:
                out.append("{{%s#> footer%s}}" % (tilde(), tilde()) + sequence(depth + 1) + "{{%s/footer%s}}" % (tilde(), tilde()))
            elif roll < 0.8:
                out.append("{{{{yes}}}}" + rng.choice(SPACES) + "{{x}}{{{{/yes}}}}")
            else:
                out.append(rng.choice(SPACES))
        return "".join(out)

    return sequence(0)


TEXT_DATA = {key: str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value for key, value in DATA.items()}


def test_random_templates_render_as_handlebars_js(handlebars_js: HandlebarsJs) -> None:
    """600 templates from a fixed seed: html with every kind of value, subject and text with text only."""
    rng = random.Random(20261201)
    differences = []
    for index in range(600):
        escaped = index % 2 == 0
        source = random_template(rng, escaped)
        case = Case(f"random-{index}", {"html": source} if escaped else {"subject": source, "text": source},
                    DATA if escaped else TEXT_DATA, PARTIALS)
        expected, got = handlebars_js.render(case), function_render(case)
        if expected != got and not ("error" in expected and "error" in got):
            differences.append(f"{source!r}\n  Handlebars.js: {expected}\n  function:      {got}")
    assert not differences, f"{len(differences)} of 600 differ, e.g.:\n" + "\n".join(differences[:3])


def test_the_runner_is_the_extensions_handlebars(handlebars_js: HandlebarsJs) -> None:
    lock = json.loads((HBS / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/handlebars"]["version"]
    assert locked == "4.7.9", "firestore-send-email's functions/package-lock.json pins handlebars 4.7.9"
    assert handlebars_js.ask({"version": True}) == {"version": locked}


def test_expected_differences_name_cases_of_the_corpus() -> None:
    ids = [case.id for case in CORPUS]
    assert len(ids) == len(set(ids))
    assert set(EXPECTED_DIFFERENCES) <= set(ids)


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_renders_as_handlebars_js(handlebars_js: HandlebarsJs, case: Case) -> None:
    expected = handlebars_js.render(case)
    got = function_render(case)
    difference = EXPECTED_DIFFERENCES.get(case.id)
    if difference is not None:
        assert (expected, got) == (difference.handlebars_js, difference.function), difference.reason
        return
    if case.id.startswith("error-"):
        assert "error" in expected and "error" in got, f"Handlebars.js: {expected}\nfunction: {got}"
        return
    assert "error" not in expected, f"the case itself fails in Handlebars.js: {expected}"
    assert got == expected

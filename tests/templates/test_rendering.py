"""mailer.templates: templates written for the Firebase extension (Handlebars.js) render the same here."""

from __future__ import annotations

import datetime

import pytest

from mailer.templates import (
    PartialSet,
    RenderedTemplate,
    Template,
    TemplateError,
    parse_template_document,
    template_data,
)

ORIGIN = "collection 'mail-templates'"


def document(name: str = "Welcome", **fields):
    return parse_template_document(name, fields, ORIGIN)


def render(data: dict, partials: PartialSet | None = None, **fields) -> dict:
    template = Template(document(**fields), partials or PartialSet())
    return template.render(data).fields


def partials(**documents: dict) -> PartialSet:
    return PartialSet([parse_template_document(name, {"partial": True, **fields}, ORIGIN) for name, fields in documents.items()])


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("{{#each items}}{{this.name}}{{@index}}{{/each}}", {"items": [{"name": "a"}, {"name": "b"}]}, "a0b1"),
        ("{{#each items}}{{#if @first}}[{{/if}}{{this}}{{#unless @last}}, {{/unless}}{{/each}}]", {"items": ["x", "y", "z"]}, "[x, y, z]"),
        ("{{#each prices}}{{@key}}={{this}};{{/each}}", {"prices": {"tea": 3, "cake": 4.5}}, "tea=3;cake=4.5;"),
        ("{{#each items}}{{name}} of {{../shop}}. {{/each}}", {"shop": "Acme", "items": [{"name": "a"}, {"name": "b"}]}, "a of Acme. b of Acme. "),
        ("{{#each items}}x{{else}}nothing{{/each}}", {"items": []}, "nothing"),
        ("{{#if a}}yes{{else}}no{{/if}}", {"a": True}, "yes"),
        ("{{#if a}}yes{{else}}no{{/if}}", {"a": 0}, "no"),  # JavaScript truth: 0, "", [] and null are false
        ("{{#if a}}yes{{else}}no{{/if}}", {"a": []}, "no"),
        ("{{#if a}}yes{{else}}no{{/if}}", {"a": {}}, "yes"),
        ("{{#if a}}A{{else if b}}B{{else}}C{{/if}}", {"b": "set"}, "B"),
        ("{{#unless verified}}Please verify.{{/unless}}", {"verified": False}, "Please verify."),
        ("{{#with user}}{{name}} ({{../team}}){{/with}}", {"user": {"name": "Ada"}, "team": "Core"}, "Ada (Core)"),
        ("{{#with missing}}shown{{else}}no user{{/with}}", {}, "no user"),
        ("{{user.address.city}}", {"user": {"address": {"city": "Turin"}}}, "Turin"),
        ("{{lookup scores name}}", {"scores": {"ada": 10}, "name": "ada"}, "10"),
        ("{{@root.brand}}{{#each items}}/{{@root.brand}}{{/each}}", {"brand": "B", "items": [1, 2]}, "B/B/B"),
        ("{{n}} {{f}} {{t}} {{list}}", {"n": 3, "f": 2.0, "t": True, "list": [1, 2]}, "3 2 true 1,2"),
        ("{{! a comment }}{{!-- another --}}kept", {}, "kept"),
        ("a  {{~name~}}  b", {"name": "X"}, "aXb"),
    ],
)
def test_handlebars_features_render_as_handlebars_js_does(source: str, data: dict, expected: str) -> None:
    assert render(data, text=source)["text"] == expected


def test_a_missing_variable_renders_empty_as_handlebars_does() -> None:
    fields = render({"user": {}}, subject="Hi {{user.name}}{{nobody.at.all}}!", html="<p>{{missing}}</p>")
    assert fields == {"subject": "Hi !", "html": "<p></p>"}


def test_html_and_amp_escape_as_handlebars_subject_and_text_do_not() -> None:
    hostile = "<b>\"Tom\" & 'Jerry'</b> `x`=1"
    fields = render({"v": hostile}, subject="{{v}}", text="{{v}}", html="{{v}}|{{{v}}}", amp="{{v}}|{{&v}}")
    escaped = "&lt;b&gt;&quot;Tom&quot; &amp; &#x27;Jerry&#x27;&lt;/b&gt; &#x60;x&#x60;&#x3D;1"
    assert fields["subject"] == hostile and fields["text"] == hostile
    assert fields["html"] == f"{escaped}|{hostile}"
    assert fields["amp"] == f"{escaped}|{hostile}"


def test_partials_serve_each_field_from_their_own_field() -> None:
    footer = partials(footer={"html": "<p>Bye {{name}}</p>", "text": "Bye {{name}}", "subject": "[{{name}}]"})
    fields = render(
        {"name": "<Ada>"}, footer, subject="Hello {{> footer}}", text="Hello\n{{> footer}}", html="<div>{{> footer}}</div>"
    )
    assert fields == {"subject": "Hello [<Ada>]", "text": "Hello\nBye <Ada>", "html": "<div><p>Bye &lt;Ada&gt;</p></div>"}


def test_partials_with_a_context_and_a_fallback_block() -> None:
    card = partials(card={"text": "{{name}}:{{role}}"})
    assert render({"user": {"name": "Ada"}}, card, text="{{> card user role='admin'}}")["text"] == "Ada:admin"
    assert render({}, card, text="{{#> absent}}fallback{{/absent}}")["text"] == "fallback"


@pytest.mark.parametrize(
    ("the_partials", "expected"),
    [
        ({}, "html uses {{> footer}}, but partial 'footer' does not exist in collection 'mail-templates'"),
        ({"footer": {"text": "only text"}}, "html uses {{> footer}}, but partial 'footer' has no html"),
        ({"footer": {"html": "{{#if a}}open"}}, "html uses {{> footer}}, but partial 'footer' in collection 'mail-templates': html has a syntax error at line 1, column 1"),
    ],
)
def test_a_partial_that_cannot_serve_names_the_template_and_the_partial(the_partials: dict, expected: str) -> None:
    with pytest.raises(TemplateError) as raised:
        render({}, partials(**the_partials), html="<div>{{> footer}}</div>")
    assert str(raised.value).startswith(f"template: 'Welcome' in collection 'mail-templates': {expected}")


@pytest.mark.parametrize(
    ("html", "where", "problem"),
    [
        ("<p>\n  {{#if user}}\n  <b>{{user.name}}</b>\n</p>", "line 2, column 3 ('{{#if user}}')", "unclosed block"),
        ("<p>\n{{#each items}}\n{{name}}\n{{/if}}</p>", "line 4, column 1 ('{{/if}}')", "unexpected closing tag if"),
        ("Hello {{name}},\nyour code: {{code", "line 2, column 12 ('{{code')", "unclosed tag"),
        ("{{else}}", "line 1, column 1 ('{{else}}')", "{{else}} outside a block"),
    ],
)
def test_a_syntax_error_names_the_template_the_field_and_where(html: str, where: str, problem: str) -> None:
    with pytest.raises(TemplateError) as raised:
        Template(document(html=html))
    message = str(raised.value)
    assert message == f"template: 'Welcome' in collection 'mail-templates': html has a syntax error at {where}: {problem}"


def test_a_helper_that_does_not_exist_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match=r"^template: 'Welcome' in collection 'mail-templates': text: Missing helper: \"shout\"$"):
        render({"name": "x"}, text="{{shout name}}")


def test_the_log_helper_writes_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    assert render({"secret": "pin-4321"}, text="a{{log secret}}b")["text"] == "ab"
    out, err = capfd.readouterr()
    assert "pin-4321" not in out + err


def test_attachment_strings_render_unescaped_and_a_missing_value_is_an_error() -> None:
    attachments = [{"filename": "{{who}}.txt", "content": "Q&A for {{who}}", "contentType": "text/plain"}]
    fields = render({"who": "Tom & Jerry"}, attachments=attachments)
    assert fields["attachments"] == [{"filename": "Tom & Jerry.txt", "content": "Q&A for Tom & Jerry", "contentType": "text/plain"}]
    with pytest.raises(TemplateError) as raised:
        render({}, attachments=attachments)
    assert str(raised.value) == (
        "template: 'Welcome' in collection 'mail-templates': attachments[0].filename uses {{who}}, "
        "which template.data does not define (attachments must not render a missing value)"
    )


def test_template_values_replace_the_documents_and_absent_ones_keep_them() -> None:
    message = {"subject": "doc subject", "text": "doc text", "html": "doc html", "attachments": [{"content": "doc"}]}
    template = Template(document(subject="", text=None, html="{{nothing}}"))
    merged = template.render({}).merged_into(message)
    # "" and null in the template keep the document's; a field the template has wins even rendered empty.
    assert merged == {"subject": "doc subject", "text": "doc text", "html": "", "attachments": [{"content": "doc"}]}
    assert Template(document(text="t", attachments=[])).render({}).merged_into(message)["attachments"] == [{"content": "doc"}]
    assert RenderedTemplate({"text": "x"}).merged_into(None) == {"text": "x"}


def test_data_values_print_like_javascript_with_timestamps_and_bytes_readable() -> None:
    moment = datetime.datetime(2026, 3, 1, 9, 30, tzinfo=datetime.timezone.utc)
    data = {"at": moment, "blob": b"\x00\xffhi", "nested": [{"at": moment}], "flag": False}
    assert template_data(data) == {
        "at": "2026-03-01T09:30:00+00:00", "blob": "AP9oaQ==", "nested": [{"at": "2026-03-01T09:30:00+00:00"}], "flag": False,
    }
    assert render(data, text="{{at}} {{blob}} {{flag}}")["text"] == "2026-03-01T09:30:00+00:00 AP9oaQ== false"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"subject": 3}, "subject must be a string, got number"),
        ({"html": ["<p>"]}, "html must be a string, got array"),
        ({"attachments": "file.pdf"}, "attachments must be a list of maps, got string"),
        ({"attachments": ["file.pdf"]}, "attachments must be a list of maps, got array"),
        ({"partial": "yes"}, "partial must be true or false, got string"),
    ],
)
def test_a_malformed_template_document_names_the_field(fields: dict, problem: str) -> None:
    with pytest.raises(TemplateError) as raised:
        document(**fields)
    assert str(raised.value) == f"template: 'Welcome' in collection 'mail-templates': {problem}"


def test_other_fields_of_a_template_document_are_ignored_and_partial_calls_are_detected() -> None:
    plain = document(subject="s", text="t", name="legacy", description="notes")
    assert dict(plain.sources) == {"subject": "s", "text": "t"} and not plain.uses_partials
    for call in ("{{> footer}}", "{{~> footer}}", "{{#> footer}}x{{/footer}}", "{{~#> footer}}x{{/footer}}"):
        assert document(html=call).uses_partials, call

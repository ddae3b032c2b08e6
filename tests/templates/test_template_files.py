"""templates/: every template renders with its sample data into a sendable email; the loader refuses
files that would deploy something the function cannot use."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

import pytest

from infra.templates import TemplateFileError, load_template_files, load_templates
from mailer.addresses import parse_mailbox
from mailer.compose import ComposeDefaults, compose
from mailer.document import parse_mail_document
from mailer.templates import PartialSet, Template, parse_template_document
from tests.infra.conftest import REPO_ROOT

FOLDER = REPO_ROOT / "templates"
FILES = load_template_files(FOLDER)
TEMPLATE_NAMES = sorted(name for name, file in FILES.items() if not file.document.get("partial"))
CODE_TEMPLATES = ("Register", "SignIn", "ForgotPassword", "Generic")
DEFAULTS = ComposeDefaults(default_from=parse_mailbox("Acme <noreply@acme.example>", "from"), default_reply_to=None, max_message_bytes=10 * 2**20)


def folder_partials() -> PartialSet:
    return PartialSet(
        parse_template_document(name, file.document, "templates/") for name, file in FILES.items() if file.document.get("partial")
    )


def send_as_the_function_would(name: str, data: dict):
    """Render the file as the deployed document, merge it into a mail document, validate and compose it."""
    template = Template(parse_template_document(name, FILES[name].document, "templates/"), folder_partials())
    rendered = template.render(data)
    request = parse_mail_document({"to": "ada@example.com", "message": rendered.merged_into(None)})
    return message_from_bytes(compose(request, DEFAULTS).message.as_bytes(), policy=policy.default)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_renders_its_sample_data_into_a_sendable_email(name: str) -> None:
    data = FILES[name].sample_data
    message = send_as_the_function_would(name, data)
    assert message["Subject"]
    bodies = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
    assert bodies
    for value in data.values():
        if isinstance(value, str):
            assert any(value in body for body in bodies), (name, value)


@pytest.mark.parametrize("name", CODE_TEMPLATES)
def test_verification_code_templates_carry_the_code_everywhere_and_need_nothing_else(name: str) -> None:
    message = send_as_the_function_would(name, {"code": "<7 & 3>"})
    assert "<7 & 3>" in message["Subject"]
    assert "<7 & 3>" in message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "&lt;7 &amp; 3&gt;" in html and "<7 & 3>" not in html
    assert "{{" not in html and "It expires in" not in html  # optional values left out cleanly


def test_the_loader_returns_the_deployed_fields_only() -> None:
    documents = load_templates(FOLDER)
    assert set(CODE_TEMPLATES) <= set(documents)
    for name, fields in documents.items():
        assert set(fields) <= {"subject", "text", "html", "amp", "attachments", "partial"}, name
        assert FILES[name].description, f"templates/{name}.yaml should say what it is for"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("file_name", "text", "problem"),
    [
        ("Bad.yaml", "subject: {{name}}\ndata: {}\n",
         "Bad.yaml: not valid YAML at line 1, column 11: found unhashable key; quote a value that starts with {{"),
        ("Bad.yaml", "subject: {a: 1}\ndata: {}\n", "Bad.yaml: subject: expected text, got dict; quote a value that starts with {{"),
        ("Bad.yaml", "subject: s\nhtlm: <p>x</p>\ndata: {}\n", "Bad.yaml: htlm: unknown key"),
        ("Bad.yaml", "subject: s\ntext: t\n", "Bad.yaml: data: missing; give sample data"),
        ("Bad.yaml", "subject: s\ndata: [1]\n", "Bad.yaml: data: expected a map"),
        ("Bad.yaml", "data: {}\n", "Bad.yaml: subject: the template has no subject, text, html, amp or attachments"),
        ("Bad.yaml", "subject: s\npartial: maybe\n", "Bad.yaml: partial: expected true or false"),
        ("Bad.yaml", "subject: s\ndata: {}\nattachments:\n  - path: /etc/passwd\n", "Bad.yaml: attachments[0].path: attachments carry inline content"),
        ("Bad.yaml", "subject: s\ndata: {}\nattachments:\n  - content: x\n    raw: y\n", "Bad.yaml: attachments[0].raw: unknown key"),
        ("Bad.yaml", "subject: 'unclosed\n", "Bad.yaml: not valid YAML at line"),
        ("Bad.yaml", "- just a list\n", "Bad.yaml: expected a map"),
        ("has space.yaml", "subject: s\ndata: {}\n", "'has space' is not a usable template name"),
        ("__x__.yaml", "subject: s\ndata: {}\n", "'__x__' is not a usable template name"),
        ("Old.yml", "subject: s\ndata: {}\n", "Old.yml: name template files *.yaml"),
    ],
)
def test_a_bad_file_fails_with_one_line_naming_the_file_and_key(tmp_path: Path, file_name: str, text: str, problem: str) -> None:
    write(tmp_path, file_name, text)
    with pytest.raises(TemplateFileError) as raised:
        load_templates(tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert problem in message, message


def test_partials_need_no_sample_data_and_other_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "footer.yaml", "partial: true\ntext: bye\n")
    write(tmp_path, "README.md", "# templates\n")
    write(tmp_path, "Hello.yaml", "subject: 'Hi {{name}}'\ntext: |\n  Hello {{name}}\n  {{> footer}}\ndata:\n  name: Ada\n")
    assert load_templates(tmp_path) == {
        "footer": {"text": "bye", "partial": True},
        "Hello": {"subject": "Hi {{name}}", "text": "Hello {{name}}\n{{> footer}}\n"},
    }
    assert load_template_files(tmp_path)["Hello"].sample_data == {"name": "Ada"}


def test_a_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TemplateFileError, match="the templates folder does not exist"):
        load_templates(tmp_path / "nope")

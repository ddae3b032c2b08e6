"""Template and uid emails end to end: documents in the emulator, Eventarc-shaped events, the deployed
entry point, a real SMTP server; the templates are the repository's templates/ folder, seeded as the
deployment writes them."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy

import pytest

from infra.templates import load_templates
from tests.function.conftest import SMTP_PASSWORD, SMTP_USER
from tests.infra.conftest import REPO_ROOT


@pytest.fixture
def inbox(smtp_server):
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


@pytest.fixture
def line(pipeline, inbox):
    """The pipeline with templates/ seeded into its own templates collection and a users collection."""
    templates = f"{pipeline.collection}_templates"
    users = f"{pipeline.collection}_users"
    for name, fields in load_templates(REPO_ROOT / "templates").items():
        pipeline.client.collection(templates).document(name).set(fields)
    pipeline.configure(
        SMTP_CONNECTION_URI=inbox.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD, TEMPLATES_COLLECTION=templates, USERS_COLLECTION=users
    )
    pipeline.templates, pipeline.users = templates, users
    pipeline.start_bridge()
    return pipeline


def parsed(received):
    return message_from_bytes(received.content, policy=policy.default)


def test_a_template_email_is_rendered_escaped_and_sent(line, inbox) -> None:
    data = {"to": "ada@example.com", "template": {"name": "SignIn", "data": {"code": "<905127>", "expiresInMinutes": 5}}}
    delivery = line.send("signin", data)
    assert delivery["state"] == "SUCCESS", delivery
    message = parsed(inbox.messages[0])
    assert message["Subject"] == "Your sign-in code: <905127>"
    text = message.get_body(("plain",)).get_content()
    assert "Use this code to sign in: <905127>" in text and "It expires in 5 minutes." in text
    assert "replies are not read" in text  # the footer partial's text
    html = message.get_body(("html",)).get_content()
    assert "&lt;905127&gt;" in html and "<905127>" not in html


def test_template_reads_are_amortized_and_a_warm_email_costs_no_read_and_two_writes(line, inbox) -> None:
    email = {"to": "ada@example.com", "template": {"name": "Generic", "data": {"code": "1"}}}
    line.emulator.reset_stats()
    line.doc("first").create(email)
    line.wait_seen("first", 3)  # the app's create, the claim, the outcome
    line.doc("second").create(email)
    line.wait_seen("second", 3)
    stats = line.emulator.stats()
    for doc_id in ("first", "second"):
        path = f"{line.collection}/{doc_id}"
        assert stats["writesByDocument"][path] == 3  # 1 by the app + 2 by the function
        assert stats["readsByDocument"].get(path, 0) == 0
    # The cold instance read the template and the partials once; the second email read nothing.
    template_reads = {path: count for path, count in stats["readsByDocument"].items() if path.startswith(line.templates + "/")}
    assert template_reads == {f"{line.templates}/Generic": 1, f"{line.templates}/footer": 1}
    assert stats["reads"] == 2
    assert len(inbox.messages) == 2


def test_document_fields_the_template_does_not_set_are_kept(line, inbox) -> None:
    line.client.collection(line.templates).document("HtmlOnly").set({
        "html": "<p>{{greeting}}</p>",
        "attachments": [{"filename": "{{file}}", "content": "{{pdf}}", "encoding": "base64"}],
    })
    pdf = b"%PDF-1.4 fake"
    data = {"to": "ada@example.com", "message": {"subject": "From the document", "text": "doc text", "html": "replaced"},
            "template": {"name": "HtmlOnly", "data": {"greeting": "Hi & bye", "file": "a.pdf", "pdf": base64.b64encode(pdf).decode()}}}
    assert line.send("merged", data)["state"] == "SUCCESS"
    message = parsed(inbox.messages[0])
    assert message["Subject"] == "From the document"
    assert message.get_body(("plain",)).get_content().strip() == "doc text"
    assert message.get_body(("html",)).get_content().strip() == "<p>Hi &amp; bye</p>"
    (attachment,) = message.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content()) == ("a.pdf", pdf)


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ({"name": "Nope"}, "template: 'Nope' does not exist in collection '{templates}'"),
        ({"name": "Nope", "fallback": "Nada"}, "template: neither 'Nope' nor its fallback 'Nada' exists in collection '{templates}'"),
        ({"name": "footer"}, "template: 'footer' in collection '{templates}' is a partial (partial: true)"),
        ({"name": "Broken"}, "template: 'Broken' in collection '{templates}': text has a syntax error at line 2, column 3 ('{{{{/each}}}}'): unexpected closing tag each"),
        ({"name": "Generic", "data": {"code": "1\r\nBcc: victim@example.org"}},
         "template: 'Generic' in collection '{templates}' rendered an invalid message.subject: the subject must not contain CR, LF"),
        ({"name": "bad/name"}, "template.name: 'bad/name' is not a valid document id"),
    ],
)
def test_template_failures_are_written_back_and_nothing_is_sent(line, inbox, template, error) -> None:
    line.client.collection(line.templates).document("Broken").set({"subject": "s", "text": "ok\n  {{/each}}"})
    line.emulator.reset_stats()
    delivery = line.send("failing", {"to": "ada@example.com", "template": template})
    assert delivery["state"] == "ERROR"
    assert delivery["error"].startswith(error.format(templates=line.templates)), delivery["error"]
    assert "\n" not in delivery["error"]
    assert inbox.messages == []
    assert line.emulator.stats()["writesByDocument"][f"{line.collection}/failing"] == 2  # the app's + one ERROR


def test_a_fallback_template_serves_a_missing_one(line, inbox) -> None:
    data = {"to": "ada@example.com", "template": {"name": "MagicLink", "fallback": "Generic", "data": {"code": "777"}}}
    assert line.send("fallback", data)["state"] == "SUCCESS"
    assert parsed(inbox.messages[0])["Subject"] == "Your verification code: 777"


def test_uids_are_sent_to_and_the_unresolved_ones_are_listed(line, inbox) -> None:
    users = line.client.collection(line.users)
    users.document("ada").set({"email": "ada@example.com"})
    users.document("bob").set({"email": "bob@example.com"})
    users.document("nomail").set({"name": "x"})
    data = {"to": "ADA@example.com", "toUids": ["ada", "ghost"], "bccUids": ["bob", "nomail"],
            "template": {"name": "Register", "data": {"code": "5"}}}
    delivery = line.send("uids", data)
    assert delivery["state"] == "SUCCESS", delivery
    (received,) = inbox.messages
    assert received.rcpt_tos == ["ADA@example.com", "bob@example.com"]  # the first spelling is kept
    assert "Bcc" not in parsed(received) and parsed(received)["To"] == "ADA@example.com"
    assert delivery["unresolvedUids"] == [
        {"uid": "ghost", "reason": f"no document 'ghost' in the users collection '{line.users}'"},
        {"uid": "nomail", "reason": "the user document has no email field"},
    ]


def test_no_recipient_left_after_resolving_is_an_error_listing_the_uids(line, inbox) -> None:
    data = {"toUids": ["ghost"], "message": {"subject": "s", "text": "t"}}
    delivery = line.send("nobody", data)
    assert delivery["state"] == "ERROR"
    assert delivery["error"].startswith("toUids: no recipient remains")
    assert delivery["unresolvedUids"] == [{"uid": "ghost", "reason": f"no document 'ghost' in the users collection '{line.users}'"}]
    assert inbox.messages == []


def test_without_the_collections_templates_and_uids_are_errors_naming_the_setting(line, inbox) -> None:
    line.configure(TEMPLATES_COLLECTION=None, USERS_COLLECTION=None)
    first = line.send("no-templates", {"to": "a@example.com", "template": {"name": "Generic", "data": {"code": "1"}}})
    second = line.send("no-users", {"toUids": ["ada"], "message": {"subject": "s", "text": "t"}})
    assert first["error"].startswith("template: TEMPLATES_COLLECTION is not set, so template 'Generic' cannot be rendered")
    assert second["error"].startswith("toUids: USERS_COLLECTION is not set")
    assert (first["state"], second["state"], inbox.messages) == ("ERROR", "ERROR", [])

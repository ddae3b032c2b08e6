"""The Firebase extension's own documented example documents, run through the deployed function (Firestore
emulator -> Eventarc-shaped events -> functions-framework -> a real SMTP server with STARTTLS and AUTH).

Sources (firestore-send-email 0.2.8 and its documentation):
- PREINSTALL.md / README.md: the basic html document; "Using custom headers"; SendGrid categories and
  dynamic templates (issue 12 item 4 carries those; tests/message/test_sendgrid.py covers them).
- POSTINSTALL.md: the console example (`to` as a list, subject/text/html) and the Admin SDK example (`to` as
  a string).
- docs/extensions/official/firestore-send-email (fields): from, replyTo, to, toUids, cc, ccUids, bcc,
  bccUids, headers, message {subject, text, html, amp, attachments}.
- .../firestore-send-email/templates: the `following` template and the document that sends it with
  toUids, and the `footer` partial.
- Attachments "as Nodemailer options" (the extension's docs link nodemailer.com/message/attachments): a
  utf-8 string, an encoded string, a custom content type, a URL, a data URI and a pre-generated MIME node.

Where this project is stricter it refuses the document and says why in `delivery.error`; each refusal's
exact text is asserted here and listed in the README's migration guide.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from .conftest import ROOT, SMTP_PASSWORD, SMTP_USER

HTML_BASIC = {  # PREINSTALL.md / README.md "a basic example document write"
    "to": "someone@example.com",
    "message": {"subject": "Hello from Firebase!", "html": "This is an <code>HTML</code> email body."},
}
CONSOLE = {  # POSTINSTALL.md "See it in action"
    "to": ["someone@example.com"],
    "message": {
        "subject": "Hello from Firebase!",
        "text": "This is the plaintext section of the email body.",
        "html": "This is the <code>HTML</code> section of the email body.",
    },
}
ADMIN_SDK = {**CONSOLE, "to": "someone@example.com"}  # POSTINSTALL.md, the Admin SDK `.add({...})`
CUSTOM_HEADERS = {  # PREINSTALL.md "Example JSON with Custom Headers"
    "to": ["example@example.com"],
    "message": {
        "subject": "Test Email with Custom Headers",
        "text": "This is a test email to see if custom headers work.",
        "html": "<strong>This is a test email to see if custom headers work.</strong>",
    },
    "headers": {"X-Custom-Header": "CustomValue", "X-Another-Header": "AnotherValue"},
}
# The templates page: the `following` template as documented (with an attachment fetched from `path`) ...
FOLLOWING = {
    "subject": "@{{username}} is now following you!",
    "html": "Just writing to let you know that <code>@{{username}}</code> ({{name}}) is now following you.",
    "attachments": [{"filename": "{{username}}.jpg", "path": "{{imagePath}}"}],
}
# ... and the document that sends it.
FOLLOWING_EMAIL = {
    "toUids": ["abc123"],
    "template": {
        "name": "following",
        "data": {"username": "ada", "name": "Ada Lovelace", "imagePath": "https://example.com/path/to/file/image-name.jpg"},
    },
}
# The templates page's partial: a footer with an html and a text version, used as {{> footer}}.
FOOTER = {
    "partial": True,
    "html": "<p>This mail was sent by The Whizzbang Company. <a href='{{unsubscribeUrl}}'>Unsubscribe</a></p>",
    "text": "This mail was sent by The Whizzbang Company. Unsubscribe here: {{unsubscribeUrl}}",
}
JPEG = b"\xff\xd8\xff\xe0fake-jpeg"


@pytest.fixture
def inbox(smtp_server):
    return smtp_server(tls="starttls", auth=True, users={SMTP_USER: SMTP_PASSWORD})


@pytest.fixture
def line(pipeline, inbox):
    """The function as the extension was installed: a users collection and a templates collection."""
    pipeline.templates, pipeline.users = f"{pipeline.collection}_templates", f"{pipeline.collection}_users"
    pipeline.client.collection(pipeline.users).document("abc123").set({"email": "ada@example.com", "displayName": "Ada"})
    pipeline.client.collection(pipeline.users).document("def456").set({"email": "Grace Hopper <grace@example.com>"})
    pipeline.configure(SMTP_CONNECTION_URI=inbox.uri(SMTP_USER), SMTP_PASSWORD=SMTP_PASSWORD,
                       TEMPLATES_COLLECTION=pipeline.templates, USERS_COLLECTION=pipeline.users,
                       DEFAULT_FROM="Friendly Firebaser <foobar@example.com>")
    pipeline.start_bridge()
    return pipeline


def received(inbox, index: int = -1) -> EmailMessage:
    return message_from_bytes(inbox.messages[index].content, policy=policy.default)


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    return part.get_content().replace("\r\n", "\n").rstrip("\n")


def delivered(line, doc_id: str, data: dict[str, Any]) -> dict[str, Any]:
    delivery = line.send(doc_id, data)
    assert delivery["state"] == "SUCCESS", delivery
    return delivery


def refused(line, inbox, doc_id: str, data: dict[str, Any]) -> str:
    delivery = line.send(doc_id, data)
    assert delivery["state"] == "ERROR", delivery
    assert inbox.messages == []
    return delivery["error"]


# --- accepted as documented --------------------------------------------------------------------------------------


def test_the_basic_html_document(line, inbox) -> None:
    delivery = delivered(line, "basic", HTML_BASIC)
    (envelope,) = inbox.messages
    assert envelope.mail_from == "foobar@example.com" and envelope.rcpt_tos == ["someone@example.com"]
    message = received(inbox)
    assert message["Subject"] == "Hello from Firebase!"
    assert str(message["From"]) == "Friendly Firebaser <foobar@example.com>"
    assert body(message, "html") == "This is an <code>HTML</code> email body."
    assert delivery["info"]["accepted"] == ["someone@example.com"]


@pytest.mark.parametrize("document", [CONSOLE, ADMIN_SDK], ids=["console-to-list", "admin-sdk-to-string"])
def test_the_postinstall_examples(line, inbox, document) -> None:
    delivered(line, "postinstall", document)
    message = received(inbox)
    assert str(message["To"]) == "someone@example.com"
    assert message["Subject"] == "Hello from Firebase!"
    assert body(message, "plain") == "This is the plaintext section of the email body."
    assert body(message, "html") == "This is the <code>HTML</code> section of the email body."


def test_custom_headers(line, inbox) -> None:
    delivered(line, "headers", CUSTOM_HEADERS)
    message = received(inbox)
    assert message["X-Custom-Header"] == "CustomValue" and message["X-Another-Header"] == "AnotherValue"
    assert body(message, "html") == "<strong>This is a test email to see if custom headers work.</strong>"


def test_every_sender_and_recipient_field(line, inbox) -> None:
    delivery = delivered(line, "fields", {
        "from": "Support <support@example.com>",
        "replyTo": "help@example.com",
        "to": ["someone@example.com", "Other Person <other@example.com>"],
        "toUids": ["abc123"],
        "cc": "cc@example.com",
        "ccUids": ["def456"],
        "bcc": ["hidden@example.com"],
        "bccUids": [],
        "headers": {"List-Unsubscribe": "<mailto:unsubscribe@example.com>"},
        "message": {"subject": "All the fields", "text": "text", "html": "<p>html</p>", "amp": "<!doctype html><html ⚡4email><body>amp</body></html>"},
    })
    (envelope,) = inbox.messages
    assert envelope.mail_from == "support@example.com"
    assert sorted(envelope.rcpt_tos) == sorted(["someone@example.com", "other@example.com", "ada@example.com",
                                                 "cc@example.com", "grace@example.com", "hidden@example.com"])
    message = received(inbox)
    assert [address.addr_spec for address in message["To"].addresses] == ["someone@example.com", "other@example.com", "ada@example.com"]
    assert [address.addr_spec for address in message["Cc"].addresses] == ["cc@example.com", "grace@example.com"]
    assert message["Bcc"] is None  # bcc recipients get the message but are not shown
    assert str(message["Reply-To"]) == "help@example.com"
    assert message["List-Unsubscribe"] == "<mailto:unsubscribe@example.com>"
    assert body(message, "plain") == "text" and body(message, "html") == "<p>html</p>"
    amp = [part for part in message.walk() if part.get_content_type() == "text/x-amp-html"]
    assert len(amp) == 1 and "amp" in amp[0].get_content()
    assert sorted(delivery["info"]["accepted"]) == sorted(envelope.rcpt_tos)


def test_the_following_template_without_its_path_attachment_and_toUids(line, inbox) -> None:
    following = {key: value for key, value in FOLLOWING.items() if key != "attachments"}
    line.client.collection(line.templates).document("following").set(following)
    delivered(line, "following", FOLLOWING_EMAIL)
    (envelope,) = inbox.messages
    assert envelope.rcpt_tos == ["ada@example.com"]  # toUids ["abc123"] through the users collection
    message = received(inbox)
    assert message["Subject"] == "@ada is now following you!"
    assert body(message, "html") == "Just writing to let you know that <code>@ada</code> (Ada Lovelace) is now following you."


def test_the_following_template_with_its_attachment_as_inline_content(line, inbox) -> None:
    """The migration for the documented `path` attachment: the app puts the bytes in template.data."""
    template = {**FOLLOWING, "attachments": [{"filename": "{{username}}.jpg", "content": "{{image}}", "encoding": "base64"}]}
    line.client.collection(line.templates).document("following").set(template)
    data = {**FOLLOWING_EMAIL["template"]["data"], "image": base64.b64encode(JPEG).decode()}
    delivered(line, "following-inline", {**FOLLOWING_EMAIL, "template": {"name": "following", "data": data}})
    (attachment,) = list(received(inbox).iter_attachments())
    assert attachment.get_filename() == "ada.jpg" and attachment.get_content() == JPEG


def test_the_footer_partial(line, inbox) -> None:
    line.client.collection(line.templates).document("footer").set(FOOTER)
    line.client.collection(line.templates).document("news").set({
        "subject": "News for {{name}}",
        "html": "<p>Hello {{name}}</p>{{> footer}}",
        "text": "Hello {{name}}\n{{> footer}}",
    })
    data = {"name": "Ada", "unsubscribeUrl": "https://example.com/unsubscribe?u=1&t=2"}
    delivered(line, "news", {"to": "someone@example.com", "template": {"name": "news", "data": data}})
    message = received(inbox)
    assert message["Subject"] == "News for Ada"
    assert body(message, "plain") == "Hello Ada\nThis mail was sent by The Whizzbang Company. Unsubscribe here: https://example.com/unsubscribe?u=1&t=2"
    assert body(message, "html") == (
        "<p>Hello Ada</p><p>This mail was sent by The Whizzbang Company. "
        "<a href='https://example.com/unsubscribe?u&#x3D;1&amp;t&#x3D;2'>Unsubscribe</a></p>"
    )


def test_inline_attachments_as_nodemailer_documents_them(line, inbox) -> None:
    delivered(line, "attachments", {
        "to": "someone@example.com",
        "message": {
            "subject": "Attachments", "text": "see attached",
            "attachments": [
                {"filename": "text1.txt", "content": "hello world!"},  # utf-8 string
                {"filename": "text2.txt", "content": "aGVsbG8gd29ybGQh", "encoding": "base64"},  # encoded string
                {"filename": "data.csv", "content": "a,b\n1,2\n", "contentType": "text/csv"},  # custom content type
                {"filename": "logo.png", "content": base64.b64encode(b"\x89PNG-ish").decode(), "encoding": "base64",
                 "cid": "logo@example.com"},  # embedded image, referenced as cid:logo@example.com
            ],
        },
    })
    parts = {part.get_filename(): part for part in received(inbox).walk() if part.get_filename()}
    assert parts["text1.txt"].get_content() == "hello world!"
    assert parts["text2.txt"].get_content() == "hello world!"
    assert parts["data.csv"].get_content_type() == "text/csv" and parts["data.csv"].get_content() == "a,b\n1,2\n"
    assert parts["logo.png"]["Content-ID"] == "<logo@example.com>"
    assert parts["logo.png"].get_content() == b"\x89PNG-ish"


# --- refused here, accepted by the extension ---------------------------------------------------------------------

INLINE_ONLY = (
    "attachments must carry inline content; path and href are refused because they would let a document read "
    "the function's files or fetch internal URLs"
)
# (document, the exact delivery.error), each listed in the README's migration guide.
REFUSALS = {
    "url-attachment": (
        {"to": "someone@example.com", "message": {"subject": "s", "text": "t", "attachments": [
            {"filename": "license.txt", "path": "https://raw.github.com/nodemailer/nodemailer/master/LICENSE"}]}},
        f"message.attachments[0].path: {INLINE_ONLY}",
    ),
    "data-uri-attachment": (
        {"to": "someone@example.com", "message": {"subject": "s", "text": "t", "attachments": [
            {"path": "data:text/plain;base64,aGVsbG8gd29ybGQ="}]}},
        f"message.attachments[0].path: {INLINE_ONLY}",
    ),
    "href-attachment": (
        {"to": "someone@example.com", "message": {"subject": "s", "text": "t", "attachments": [
            {"filename": "page.html", "href": "http://169.254.169.254/computeMetadata/v1/"}]}},
        f"message.attachments[0].href: {INLINE_ONLY}",
    ),
    "mime-node-attachment": (
        {"to": "someone@example.com", "message": {"subject": "s", "text": "t", "attachments": [
            {"raw": "Content-Type: text/plain\r\nContent-Disposition: attachment;\r\n\r\nHello world!"}]}},
        "message.attachments[0].raw: unknown field; message.attachments[0] accepts filename, content, encoding, "
        "contentType, cid, contentDisposition",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_stricter_refusals(line, inbox, case) -> None:
    document, expected = REFUSALS[case]
    assert refused(line, inbox, case, document) == expected


def test_the_documented_following_template_is_refused_for_its_path_attachment(line, inbox) -> None:
    line.client.collection(line.templates).document("following").set(FOLLOWING)
    assert refused(line, inbox, "following-path", FOLLOWING_EMAIL) == (
        f"template: 'following' in collection {line.templates!r} rendered an invalid message.attachments[0].path: {INLINE_ONLY}"
    )


# --- other documents the extension sends and this function refuses (the migration guide's list) ------------------

APP_REFUSALS = {
    "address-object": ({"to": {"name": "Ada", "address": "ada@example.com"}, "message": {"subject": "s", "text": "t"}},
                       "to: expected a string or a list of strings, got map"),
    "from-inside-message": ({"to": "a@example.com", "message": {"subject": "s", "text": "t", "from": "x@example.com"}},
                            "message.from: from belongs at the top level of the document, not inside message"),
    "unknown-message-field": ({"to": "a@example.com", "message": {"subject": "s", "text": "t", "messageId": "<a@b.example>"}},
                              "message.messageId: unknown field; message accepts subject, text, html, amp, attachments"),
    "owned-header": ({"to": "a@example.com", "headers": {"Message-ID": "<x@y.example>"}, "message": {"subject": "s", "text": "t"}},
                     "headers.Message-ID: this header is set by the function; the function generates it"),
    "raw-x-smtpapi": ({"to": "a@example.com", "headers": {"X-SMTPAPI": '{"to": ["b@example.com"]}'},
                       "message": {"subject": "s", "text": "t"}},
                      "headers.X-SMTPAPI: this header is set by the function; the function builds it from the "
                      "document's categories and sendGrid fields (SendGrid only)"),
    "header-not-text": ({"to": "a@example.com", "headers": {"X-Flag": True}, "message": {"subject": "s", "text": "t"}},
                        "headers.X-Flag: header values must be strings or numbers, got boolean"),
    "reply-to-list": ({"to": "a@example.com", "replyTo": ["a@example.com", "b@example.com"], "message": {"subject": "s", "text": "t"}},
                      "replyTo: expected a single address string, got array"),
    "missing-template": ({"to": "a@example.com", "template": {"name": "nowhere", "data": {}}},
                         "template: 'nowhere' does not exist in collection {templates!r}"),
    "no-subject": ({"to": "a@example.com", "message": {"text": "t"}},
                   "message.subject: missing subject: set message.subject or use a template that renders one"),
    "amp-only": ({"to": "a@example.com", "message": {"subject": "s", "amp": "<!doctype html><html ⚡4email><body>a</body></html>"}},
                 "message.html: an AMP body needs a text or html fallback: set message.html or message.text"),
    "subject-line-break": ({"to": "a@example.com", "message": {"subject": "Hi\nthere", "text": "t"}},
                           "message.subject: the subject must not contain CR, LF, NUL or other control characters"),
    "subject-encoded-word": ({"to": "a@example.com", "message": {"subject": "=?utf-8?q?hi?=", "text": "t"}},
                             "message.subject: the subject must not contain '=?...?=' (RFC 2047 encoded-word syntax); "
                             "write plain text, it is encoded when sent"),
    "uid-without-user": ({"toUids": ["nobody"], "message": {"subject": "s", "text": "t"}},
                         "toUids: no recipient remains: none of the 1 user ids has a valid email in {users!r} (see delivery.unresolvedUids)"),
}


@pytest.mark.parametrize("case", sorted(APP_REFUSALS))
def test_what_an_app_may_trip_on(line, inbox, case) -> None:
    document, expected = APP_REFUSALS[case]
    assert refused(line, inbox, case, document) == expected.format(templates=line.templates, users=line.users)


# --- from the extension's configuration to this function -----------------------------------------------------------


@pytest.fixture
def imported_environment(tmp_path):
    """The extension's `ext:export` file (tests/ops/data) imported into a stack, the program run on that stack
    under Pulumi's mocks: the process_mail function's environment and trigger as they would deploy."""
    import pulumi
    from pulumi.runtime import settings as pulumi_settings

    from infra.stack_files import stack_config
    from ops import import_config
    from review.harness import PulumiHarness, TEST_PASSWORD

    env_file = ROOT / "tests" / "ops" / "data" / "firestore-send-email.env"
    code = import_config.main(["extension", str(env_file), "--stack", "migrated", "--project", "acme-mailer-prod",
                               "--stacks-dir", str(tmp_path), "--write"], out=io.StringIO(), err=io.StringIO())
    assert code == 0
    harness = PulumiHarness()
    try:
        harness.install("migrated", {**stack_config(tmp_path / "Pulumi.migrated.yaml"), "mailer:smtpPassword": TEST_PASSWORD},
                        ["mailer:smtpPassword"])
        function = harness.run_main().function("process_mail").inputs
    finally:
        pulumi.runtime.set_all_config({}, [])
        pulumi_settings.ROOT.set(None)
    return function["serviceConfig"]["environmentVariables"], function["eventTrigger"]


def test_the_imported_extension_configuration_deploys_a_function_that_sends_its_examples(line, inbox, imported_environment) -> None:
    environment, trigger = imported_environment
    # As the extension was installed (tests/ops/data/firestore-send-email.env).
    assert trigger["triggerRegion"] == "nam5"
    assert {item["attribute"]: item["value"] for item in trigger["eventFilters"]} == {"database": "(default)", "document": "mail/{docId}"}
    assert {name: environment.get(name) for name in (
        "MAIL_COLLECTION", "DATABASE", "DEFAULT_FROM", "DEFAULT_REPLY_TO", "USERS_COLLECTION", "TEMPLATES_COLLECTION",
        "TTL_EXPIRE_TYPE", "TTL_EXPIRE_VALUE", "SMTP_CONNECTION_URI")} == {
        "MAIL_COLLECTION": "mail", "DATABASE": "(default)", "DEFAULT_FROM": "Acme <noreply@acme.example>",
        "DEFAULT_REPLY_TO": "support@acme.example", "USERS_COLLECTION": "users", "TEMPLATES_COLLECTION": "email-templates",
        "TTL_EXPIRE_TYPE": "day", "TTL_EXPIRE_VALUE": "30", "SMTP_CONNECTION_URI": "smtp://postmaster@mg.acme.example:587",
    }
    # That environment, on this machine: the local inbox instead of Mailgun, the test's collections, no event publisher.
    local = {"SMTP_CONNECTION_URI", "GOOGLE_CLOUD_PROJECT", "MAIL_COLLECTION", "USERS_COLLECTION", "TEMPLATES_COLLECTION"}
    line.configure(**{name: value for name, value in environment.items() if name not in local and not name.startswith("EVENTS")})
    delivery = delivered(line, "migrated", HTML_BASIC)
    message = received(inbox)
    assert str(message["From"]) == "Acme <noreply@acme.example>" and str(message["Reply-To"]) == "support@acme.example"
    assert body(message, "html") == "This is an <code>HTML</code> email body."
    assert timedelta(days=29) < delivery["expireAt"] - delivery["endTime"] <= timedelta(days=31)


# --- SendGrid (PREINSTALL.md / POSTINSTALL.md) ----------------------------------------------------------------------

CATEGORIES = {  # "Example JSON with Categories"
    "to": ["example@example.com"],
    "categories": ["Example_Category"],
    "message": {
        "subject": "Test Email with Categories",
        "text": "This is a test email to see if categories work.",
        "html": "<strong>This is a test email to see if categories work.</strong>",
    },
}
DYNAMIC_TEMPLATE = {  # "Example JSON representation of Firestore document for a Dynamic Template"
    "to": ["example@example.com"],
    "sendGrid": {
        "templateId": "d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "dynamicTemplateData": {"name": "John Doe", "company": "Example Corp", "position": "Developer"},
    },
}


def test_sendgrid_categories_travel_in_x_smtpapi_with_the_sendgrid_provider(line, inbox) -> None:
    line.configure(SMTP_PROVIDER="sendgrid")
    delivered(line, "categories", CATEGORIES)
    message = received(inbox)
    assert json.loads(message["X-SMTPAPI"]) == {"category": ["Example_Category"]}
    assert body(message, "plain") == "This is a test email to see if categories work."


def test_sendgrid_examples_elsewhere_and_dynamic_templates_are_refused(line, inbox) -> None:
    assert refused(line, inbox, "categories-elsewhere", CATEGORIES) == (
        "categories: SendGrid-only field (sent in SendGrid's X-SMTPAPI header), but mail does not go through SendGrid: "
        "set SMTP_PROVIDER=sendgrid (or an SMTP_CONNECTION_URI with host smtp.sendgrid.net) or remove the field"
    )
    line.configure(SMTP_PROVIDER="sendgrid")
    assert refused(line, inbox, "dynamic-template", DYNAMIC_TEMPLATE) == (
        "sendGrid.dynamicTemplateData: dynamic template data is only used by dynamic templates; SendGrid's SMTP API "
        "(the X-SMTPAPI header this function uses) cannot send dynamic templates; only its v3 Web API can. Render the "
        "mail here instead (template {name, data} from TEMPLATES_COLLECTION)"
    )

"""SendGrid fields (issue 12 item 4) and the document's dsn (item 5), from document to serialized message.

The extension takes `categories` at the top level and templateId, dynamicTemplateData, mailSettings,
customArgs and ipPoolName under `sendGrid`; here they travel in SendGrid's X-SMTPAPI header, which is read
back from the serialized bytes as a mail parser (and SendGrid) unfolds it, and parsed as JSON."""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest

from mailer.addresses import parse_mailbox
from mailer.compose import MAX_SMTPAPI_BYTES, ComposeDefaults, ComposedMail, compose
from mailer.document import MailInputError, parse_mail_document
from mailer.dsn import DsnRequest, xtext
from mailer.settings import load_settings

SENDGRID = ComposeDefaults(
    default_from=parse_mailbox("App <app@example.com>", "DEFAULT_FROM"),
    default_reply_to=None,
    max_message_bytes=10 * 1024 * 1024,
    sendgrid=True,
)
OTHER = ComposeDefaults(SENDGRID.default_from, None, SENDGRID.max_message_bytes, sendgrid=False)
LEGACY_TEMPLATE = "5997fcf6-2b9f-484d-acd5-7e9a99f0dc1f"


def mail(**fields: object) -> dict:
    return {"to": "ada@example.com", "message": {"subject": "Hi", "text": "body"}, **fields}


def composed(document: dict, defaults: ComposeDefaults = SENDGRID) -> ComposedMail:
    return compose(parse_mail_document(document), defaults)


def refusal(document: dict, defaults: ComposeDefaults = SENDGRID) -> MailInputError:
    with pytest.raises(MailInputError) as caught:
        composed(document, defaults)
    return caught.value


def head_lines(result: ComposedMail, name: bytes = b"X-SMTPAPI") -> list[bytes]:
    """The raw lines of one header (its first line and continuation lines)."""
    lines = result.payload.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + b":"))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    return lines[start:end]


def smtpapi(result: ComposedMail) -> dict:
    message = email.message_from_bytes(result.payload, policy=email.policy.default)
    values = message.get_all("X-SMTPAPI")
    assert values is not None and len(values) == 1, values  # SendGrid reads only the first one
    return json.loads(str(values[0]))


# -- the header ------------------------------------------------------------------------------------------

def test_every_field_reaches_the_header_as_sendgrid_documents_it():
    result = composed(mail(
        categories=["welcome", "onboarding"],
        sendGrid={
            "templateId": LEGACY_TEMPLATE,
            "customArgs": {"userId": "u-42", "campaign": "spring é"},
            "ipPoolName": "transactional",
            "mailSettings": {
                "bypassListManagement": {"enable": True},
                "footer": {"enable": True, "text": "Sent by Example", "html": "<p>Sent by <b>Example</b></p>"},
            },
        },
    ))
    assert smtpapi(result) == {
        "category": ["welcome", "onboarding"],
        "unique_args": {"userId": "u-42", "campaign": "spring é"},
        "ip_pool": "transactional",
        "filters": {
            "templates": {"settings": {"enable": 1, "template_id": LEGACY_TEMPLATE}},
            "bypass_list_management": {"settings": {"enable": 1}},
            "footer": {"settings": {"enable": 1, "text/plain": "Sent by Example", "text/html": "<p>Sent by <b>Example</b></p>"}},
        },
    }
    raw = b"\r\n".join(head_lines(result))
    assert raw.isascii() and b"\\u00e9" in raw  # JSON escapes, never encoded words or raw UTF-8
    assert b"=?" not in raw


def test_snake_case_mail_settings_and_disabled_settings():
    result = composed(mail(sendGrid={"mailSettings": {"bypass_list_management": {"enable": False}, "footer": {"enable": False}}}))
    assert smtpapi(result) == {"filters": {"bypass_list_management": {"settings": {"enable": 0}},
                                           "footer": {"settings": {"enable": 0}}}}


def test_no_sendgrid_fields_no_header_and_empty_values_mean_not_set():
    for document in (mail(), mail(categories=[], sendGrid={}), mail(categories=None, sendGrid={"customArgs": {}})):
        result = composed(document, OTHER)  # not SendGrid: nothing to refuse either
        assert b"X-SMTPAPI" not in result.payload


def test_a_long_header_is_folded_at_spaces_into_short_lines_and_unfolds_to_the_same_json():
    args = {f"key{i}": "value " * 10 + str(i) for i in range(60)}
    result = composed(mail(sendGrid={"customArgs": args}))
    lines = head_lines(result)
    assert len(lines) > 10
    assert all(len(line) <= 998 for line in lines)
    assert all(len(line) <= 78 for line in lines[:-1] if b" " in line.strip())  # preferred length where possible
    assert all(line.startswith(b" ") for line in lines[1:])  # continuation lines, no blank ones
    unfolded = b"".join(lines).decode("ascii").removeprefix("X-SMTPAPI: ")  # RFC 5322 unfolding: drop CRLF only
    assert json.loads(unfolded) == {"unique_args": args}
    assert smtpapi(result) == {"unique_args": args}


def test_header_injection_is_impossible_whatever_the_values():
    hostile = "x\r\nBcc: victim@example.com\r\n\r\nbody"
    error = refusal(mail(sendGrid={"customArgs": {"k": hostile}}))
    assert error.field == "sendGrid.customArgs.k" and "control characters" in error.reason
    error = refusal(mail(sendGrid={"customArgs": {hostile: "v"}}))
    assert error.field.startswith("sendGrid.customArgs[") and "control characters" in error.reason
    # A footer is body text: line breaks are allowed there, and JSON carries them as \r\n escapes.
    result = composed(mail(sendGrid={"mailSettings": {"footer": {"enable": True, "text": hostile, "html": "<p>\n</p>"}}}))
    message = email.message_from_bytes(result.payload, policy=email.policy.default)
    assert message["Bcc"] is None
    assert smtpapi(result)["filters"]["footer"]["settings"]["text/plain"] == hostile
    assert all(b"\r" not in line and b"\n" not in line for line in head_lines(result))


def test_size_limit_names_the_largest_field():
    big = {f"k{i}": "v" * 90 for i in range(MAX_SMTPAPI_BYTES // 90)}
    error = refusal(mail(categories=["a"], sendGrid={"customArgs": big}))
    assert error.field == "sendGrid.customArgs"
    assert f"over the limit of {MAX_SMTPAPI_BYTES}" in error.reason
    # Just under the limit is sent.
    fits = {f"k{i}": "v" * 90 for i in range(MAX_SMTPAPI_BYTES // 120)}
    assert smtpapi(composed(mail(sendGrid={"customArgs": fits})))["unique_args"] == fits


def test_a_run_without_spaces_too_long_for_one_line_is_refused():
    error = refusal(mail(sendGrid={"mailSettings": {"footer": {"enable": True, "text": "t", "html": "<p>" + "x" * 2000 + "</p>"}}}))
    assert error.field == "sendGrid.mailSettings"
    assert "without a space" in error.reason and "998" in error.reason


def test_a_run_that_only_the_folding_space_pushes_over_the_line_is_named_as_such():
    """A 998-character run fits a line by itself; the single space before it (JSON's, where the line folds)
    makes 999. Not "a run of 1 spaces or tabs and a run of 998 characters ...": the value has no run of
    spaces, and 998 is not over the limit the message names."""
    error = refusal(mail(sendGrid={"customArgs": {"note": "x" * 994}}))  # the run: "xxx..."}} (998)
    assert str(error) == (
        "sendGrid.customArgs: the X-SMTPAPI header has a run of 998 characters without a space, 999 with the "
        "space before it where the line folds; it must fold into lines of at most 998")
    assert smtpapi(composed(mail(sendGrid={"customArgs": {"note": "x" * 993}})))["unique_args"] == {"note": "x" * 993}


def test_a_run_of_whitespace_too_long_for_one_line_is_refused_as_whitespace():
    """Not as "a run of N characters without a space": the value is all spaces. A line breaks only before a
    run of whitespace (never inside it, so no line ends in whitespace), so such a run cannot be folded."""
    error = refusal(mail(sendGrid={"customArgs": {"note": " " * 6000}}))
    assert str(error) == (
        "sendGrid.customArgs: the X-SMTPAPI header has a run of 6000 spaces or tabs; a header line breaks only "
        "before such a run, never inside it, so it cannot fold into lines of at most 998")
    # Spaces that fit, followed by a word that fits, but not both on one line: both runs are named.
    error = refusal(mail(sendGrid={"customArgs": {"note": " " * 600 + "x" * 600}}))
    assert error.field == "sendGrid.customArgs" and error.reason == (
        "the X-SMTPAPI header has a run of 600 spaces or tabs and a run of 603 characters without a space that "
        "together make 1203; a header line breaks only before a run of spaces or tabs, never inside it, so they "
        "cannot fold into lines of at most 998")
    # Just under the line limit is sent, and reads back as written.
    fits = " " * 990
    assert smtpapi(composed(mail(sendGrid={"customArgs": {"note": fits}})))["unique_args"] == {"note": fits}


# -- refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("document, field", [
    (mail(categories=["a"]), "categories"),
    (mail(sendGrid={"customArgs": {"a": "b"}}), "sendGrid.customArgs"),
    (mail(sendGrid={"ipPoolName": "pool"}), "sendGrid.ipPoolName"),
    (mail(sendGrid={"templateId": LEGACY_TEMPLATE}), "sendGrid.templateId"),
    (mail(sendGrid={"mailSettings": {"footer": {"enable": False}}}), "sendGrid.mailSettings"),
])
def test_other_providers_refuse_sendgrid_fields_naming_them(document, field):
    error = refusal(document, OTHER)
    assert error.field == field
    assert "SendGrid-only" in error.reason and "SMTP_PROVIDER=sendgrid" in error.reason
    assert "\n" not in str(error)


@pytest.mark.parametrize("fields, field, expected", [
    ({"categories": "welcome"}, "categories", "expected a list of strings, got string"),
    ({"categories": [f"c{i}" for i in range(11)]}, "categories", "at most 10 categories"),
    ({"categories": ["a", 3]}, "categories[1]", "expected a string, got number"),
    ({"categories": ["a", " "]}, "categories[1]", "must not be empty"),
    ({"categories": ["caté"]}, "categories[0]", "printable US-ASCII"),
    ({"categories": ["a\nb"]}, "categories[0]", "printable US-ASCII"),
    ({"categories": ["x" * 256]}, "categories[0]", "at most 255 characters"),
    ({"categories": ["a", "a"]}, "categories[1]", "duplicate category"),
    ({"sendGrid": "yes"}, "sendGrid", "expected a map, got string"),
    ({"sendGrid": {"templateID": "x"}}, "sendGrid.templateID", "unknown field; sendGrid accepts templateId"),
    ({"sendGrid": {"templateId": 5}}, "sendGrid.templateId", "expected a string, got number"),
    ({"sendGrid": {"templateId": "d-13b8f94fbcae4ec6b75270d6cb59f932"}}, "sendGrid.templateId", "cannot send dynamic templates"),
    ({"sendGrid": {"templateId": "welcome"}}, "sendGrid.templateId", "not a SendGrid legacy template id"),
    ({"sendGrid": {"dynamicTemplateData": {"name": "Ada"}}}, "sendGrid.dynamicTemplateData", "cannot send dynamic templates"),
    ({"sendGrid": {"customArgs": ["a"]}}, "sendGrid.customArgs", "expected a map of strings, got array"),
    ({"sendGrid": {"customArgs": {"n": 5}}}, "sendGrid.customArgs.n", "values must be strings, got number"),
    ({"sendGrid": {"customArgs": {"": "v"}}}, "sendGrid.customArgs['']", "non-empty strings"),
    ({"sendGrid": {"ipPoolName": 7}}, "sendGrid.ipPoolName", "expected a string, got number"),
    ({"sendGrid": {"ipPoolName": "a"}}, "sendGrid.ipPoolName", "2 to 64 characters"),
    ({"sendGrid": {"ipPoolName": "my pool"}}, "sendGrid.ipPoolName", "without spaces"),
    ({"sendGrid": {"mailSettings": []}}, "sendGrid.mailSettings", "expected a map, got array"),
    ({"sendGrid": {"mailSettings": {"sandboxMode": {"enable": True}}}}, "sendGrid.mailSettings.sandboxMode", "only in SendGrid's v3 Web API"),
    ({"sendGrid": {"mailSettings": {"bypassSpamManagement": {"enable": True}}}}, "sendGrid.mailSettings.bypassSpamManagement", "use bypassListManagement"),
    ({"sendGrid": {"mailSettings": {"clickTracking": {"enable": True}}}}, "sendGrid.mailSettings.clickTracking", "unknown mail setting"),
    ({"sendGrid": {"mailSettings": {"footer": {"enable": "yes"}}}}, "sendGrid.mailSettings.footer.enable", "expected true or false"),
    ({"sendGrid": {"mailSettings": {"footer": {"enable": True, "text": "t"}}}}, "sendGrid.mailSettings.footer.html", "needs both text and html"),
    ({"sendGrid": {"mailSettings": {"footer": {"enable": True, "text": "t", "html": "h", "color": "red"}}}}, "sendGrid.mailSettings.footer.color", "unknown field"),
    ({"sendGrid": {"mailSettings": {"footer": {"enable": False}, "bypassListManagement": {"enable": True},
                                    "bypass_list_management": {"enable": True}}}},
     "sendGrid.mailSettings.bypass_list_management", "set twice"),
    ({"headers": {"x-smtpapi": "{}"}, "categories": ["a"]}, "headers.x-smtpapi", "the function builds it"),
    # Alone too: SendGrid would act on its JSON (a `to` list mails addresses nobody counts or records).
    ({"headers": {"X-SMTPAPI": '{"to": ["x@example.com"]}'}}, "headers.X-SMTPAPI", "the function builds it"),
])
def test_invalid_sendgrid_fields_are_refused_naming_the_field(fields, field, expected):
    error = refusal(mail(**fields))
    assert error.field == field, str(error)
    assert expected in error.reason, str(error)
    assert "\n" not in str(error)


def test_a_dynamic_template_without_message_is_refused_for_the_template_not_the_message():
    error = refusal({"to": "ada@example.com", "sendGrid": {"templateId": "d-13b8f94fbcae4ec6b75270d6cb59f932",
                                                           "dynamicTemplateData": {"name": "Ada"}}})
    assert error.field.startswith("sendGrid.") and "dynamic templates" in error.reason


# -- which provider is SendGrid --------------------------------------------------------------------------

@pytest.mark.parametrize("env, sendgrid", [
    ({"SMTP_PROVIDER": "sendgrid"}, True),
    ({"SMTP_PROVIDER": "SendGrid", "SMTP_CONNECTION_URI": "smtp://apikey@smtp.example.com:587"}, True),
    ({"SMTP_CONNECTION_URI": "smtps://apikey@smtp.sendgrid.net:465"}, True),  # custom (the default) + SendGrid's host
    ({"SMTP_PROVIDER": "custom", "SMTP_CONNECTION_URI": "smtp://apikey@SMTP.SendGrid.net.:587?secure=false"}, True),
    ({"SMTP_CONNECTION_URI": "smtp://smtp.sendgrid.net.evil.example:587"}, False),
    ({"SMTP_CONNECTION_URI": "smtp://user@smtp.mailgun.org:587"}, False),
    ({"SMTP_PROVIDER": "mailgun", "SMTP_CONNECTION_URI": "smtp://apikey@smtp.sendgrid.net:587"}, False),
    ({}, False),
])
def test_settings_say_when_mail_goes_through_sendgrid(env, sendgrid):
    assert load_settings(env).sendgrid is sendgrid


def test_an_unknown_provider_is_a_settings_error_naming_the_variable():
    from mailer.settings import SettingsError

    with pytest.raises(SettingsError, match=r"^SMTP_PROVIDER: 'postmark' is not one of gmail, "):
        load_settings({"SMTP_PROVIDER": "postmark"})


# -- dsn --------------------------------------------------------------------------------------------------

def test_xtext_encodes_plus_equals_space_and_controls():
    assert xtext("order-123") == "order-123"
    assert xtext("a b+c=d\x01~!") == "a+20b+2Bc+3Dd+01~!"


def test_dsn_document_becomes_envelope_parameters():
    result = composed(mail(dsn={"id": "order 7+1", "return": "headers", "notify": ["delay", "Failure", "success"],
                                "recipient": "Ada <ada@example.com>"}), OTHER)
    assert result.dsn == DsnRequest(ret="HDRS", envid="order 7+1", notify=("SUCCESS", "FAILURE", "DELAY"), orcpt="ada@example.com")
    assert result.dsn.mail_parameters() == ["RET=HDRS", "ENVID=order+207+2B1"]
    assert result.dsn.rcpt_parameters() == ["NOTIFY=SUCCESS,FAILURE,DELAY", "ORCPT=rfc822;ada@example.com"]
    assert b"dsn" not in result.payload.lower().split(b"\r\n\r\n")[0]  # envelope only, never a header
    assert composed(mail(dsn={"notify": "never", "return": "FULL"})).dsn.rcpt_parameters() == ["NOTIFY=NEVER"]
    assert composed(mail(dsn={"notify": "success, failure"})).dsn.notify == ("SUCCESS", "FAILURE")
    assert [composed(mail(dsn={"return": value})).dsn.ret for value in ("HDRS", "body", "Full")] == ["HDRS", "FULL", "FULL"]
    assert composed(mail()).dsn is None


@pytest.mark.parametrize("dsn, field, expected", [
    ("yes", "dsn", "expected a map, got string"),
    ({}, "dsn", "set at least one of id, return, notify, recipient"),
    ({"ret": "full"}, "dsn.ret", "unknown field; dsn accepts id, return, notify, recipient"),
    ({"return": "message"}, "dsn.return", "expected \"headers\" or \"full\""),
    ({"id": 12}, "dsn.id", "expected a string, got number"),
    ({"id": ""}, "dsn.id", "must not be empty"),
    ({"id": "commande-é"}, "dsn.id", "printable US-ASCII"),
    ({"id": "a\r\nRCPT TO:<x@evil.example>"}, "dsn.id", "printable US-ASCII"),
    ({"id": "x" * 101}, "dsn.id", "at most 100 characters once encoded"),
    ({"id": "+" * 34}, "dsn.id", "at most 100 characters once encoded"),  # 34 * 3 = 102
    ({"notify": []}, "dsn.notify", "must not be empty"),
    ({"notify": ["never", "success"]}, "dsn.notify", "never cannot be combined"),
    ({"notify": ["sometimes"]}, "dsn.notify", "'sometimes' is not one of never, success, failure, delay"),
    ({"notify": 1}, "dsn.notify", "expected a list of strings or a string"),
    ({"recipient": "not an address"}, "dsn.recipient", ""),
    ({"recipient": "jörg@example.com"}, "dsn.recipient", "must be ASCII"),
])
def test_invalid_dsn_is_refused_naming_the_field(dsn, field, expected):
    error = refusal(mail(dsn=dsn))
    assert error.field == field, str(error)
    assert expected in error.reason, str(error)
    assert "\n" not in str(error)


def test_dsn_recipient_is_one_rcpts_original_recipient():
    error = refusal(mail(to=["ada@example.com", "grace@example.com"], dsn={"recipient": "ada@example.com"}))
    assert error.field == "dsn.recipient" and "2 envelope recipients" in error.reason
    # Without recipient, any number of recipients may ask for notifications.
    assert composed(mail(to=["ada@example.com", "grace@example.com"], dsn={"notify": ["failure"]})).dsn.notify == ("FAILURE",)


# -- fuzz: whatever the SendGrid fields and dsn hold, a field-named refusal or a safe message -------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mailer.prepare import Refusal, prepare  # noqa: E402
from mailer.settings import Settings  # noqa: E402
from tests.message.test_fuzz import FUZZ, hostile_text, injected, text, wrong  # noqa: E402

FUZZ_SETTINGS = {
    provider: Settings("smtp://apikey@smtp.example.com:587", default_from="App <app@example.com>", smtp_provider=provider)
    for provider in ("sendgrid", "mailgun")
}
_OUR_FIELD = re.compile(
    r"""(?:categories|sendGrid|dsn|headers)(?:\.[^\s:'"\[\]\\]+|\[\d+\]|\['(?:[^'\\]|\\.)*'\]|\["(?:[^"\\]|\\.)*"\])*(?:, \S+)*: \S"""
)
_string = st.one_of(st.sampled_from(["a", "welcome", "d-123", LEGACY_TEMPLATE, "ada@example.com", "pool1"]), injected, text)
_fuzz_sendgrid = st.one_of(
    st.fixed_dictionaries({}, optional={
        "templateId": st.one_of(_string, wrong),
        "dynamicTemplateData": st.one_of(st.none(), wrong),
        "customArgs": st.one_of(st.dictionaries(st.one_of(hostile_text, st.just("k")), st.one_of(_string, wrong), max_size=4), wrong),
        "ipPoolName": st.one_of(_string, wrong),
        "mailSettings": st.one_of(
            st.dictionaries(
                st.sampled_from(["footer", "bypassListManagement", "bypass_list_management", "sandboxMode", "x"]),
                st.one_of(st.fixed_dictionaries({"enable": st.one_of(st.booleans(), wrong)},
                                                optional={"text": st.one_of(_string, wrong), "html": st.one_of(_string, wrong)}),
                          wrong),
                max_size=3),
            wrong),
    }),
    wrong,
)
_fuzz_dsn = st.one_of(
    st.fixed_dictionaries({}, optional={
        "id": st.one_of(_string, wrong),
        "return": st.one_of(st.sampled_from(["headers", "full", "FULL", "hdrs", "x"]), _string, wrong),
        "notify": st.one_of(st.lists(st.sampled_from(["never", "success", "failure", "delay", "x"]), max_size=4),
                            st.sampled_from(["never", "success,failure", ""]), _string, wrong),
        "recipient": st.one_of(_string, wrong),
    }),
    wrong,
)
_fuzz_document = st.fixed_dictionaries(
    {"to": st.sampled_from(["ada@example.com", ["ada@example.com", "grace@example.com"]]),
     "message": st.just({"subject": "Hi", "text": "Hello"})},
    optional={
        "categories": st.one_of(st.lists(st.one_of(_string, wrong), max_size=12), wrong),
        "sendGrid": _fuzz_sendgrid,
        "dsn": _fuzz_dsn,
        "headers": st.one_of(st.just({"X-SMTPAPI": "{}"}), st.just({"X-Tag": "t"})),
    },
)


@FUZZ
@given(_fuzz_document, st.sampled_from(sorted(FUZZ_SETTINGS)))
def test_any_sendgrid_fields_and_dsn_are_refused_naming_a_field_or_composed_safely(fields, provider):
    try:
        prepared = prepare(fields, FUZZ_SETTINGS[provider])
    except Refusal as refused:
        reason = str(refused)
        assert _OUR_FIELD.match(reason), f"refusal does not start with a field name: {reason!r}"
        assert "\n" not in reason and "\r" not in reason, reason
        return
    payload = prepared.mail.payload
    head = payload.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")
    assert max(map(len, payload.split(b"\r\n"))) <= 998
    message = email.message_from_bytes(payload, policy=email.policy.default)
    values = message.get_all("X-SMTPAPI") or []
    assert len(values) <= 1
    if values and "headers" not in fields:
        assert provider == "sendgrid"
        document = json.loads(str(values[0]))
        assert set(document) <= {"category", "unique_args", "ip_pool", "filters"}
    dsn = prepared.mail.dsn
    if dsn is not None:
        for param in dsn.mail_parameters() + dsn.rcpt_parameters():
            assert param.isascii() and param.isprintable() and " " not in param, param

"""`python -m ops.import_config`: an installed extension's `ext:export` file and a Logto SMTP connector JSON
become a stack file (and templates) that the config model accepts; secrets are never printed or written."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import settings_problems
from infra.stack_files import stack_config
from infra.templates import load_template_files
from mailer.templates import Template, parse_template_document
from ops import import_config

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
EXTENSION_ENV = DATA / "firestore-send-email.env"
OAUTH2_ENV = DATA / "firestore-send-email-oauth2.env"
LOGTO_JSON = DATA / "logto-smtp-connector.json"
LOGTO_PASSWORD = "logto-Pa55word-never-shown"
PROJECT = "acme-mailer-prod"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = import_config.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def extension(tmp_path: Path, *extra: str, env: Path = EXTENSION_ENV) -> tuple[int, str, str]:
    return run("extension", str(env), "--stack", "acme", "--project", PROJECT, "--stacks-dir", str(tmp_path / "stacks"), *extra)


def logto(tmp_path: Path, *extra: str, source: Path = LOGTO_JSON, location: tuple[str, ...] = ("--region", "us-central1", "--firestore-location", "nam5")) -> tuple[int, str, str]:
    return run("logto", str(source), "--stack", "acme", "--project", PROJECT, *location, "--stacks-dir", str(tmp_path / "stacks"),
               "--templates-dir", str(tmp_path / "templates"), *extra)


def model_check(stack_file: Path) -> dict[str, str]:
    """The stack file as Pulumi hands it to the program, through the config model; fails on any problem."""
    values = stack_config(stack_file)
    settings, problems = settings_problems(values)
    assert problems == [] and settings is not None
    return values


def logto_render(template: str, payload: dict[str, Any]) -> str:
    """Logto's connector-kit replaceSendMessageHandlebars, as written in TypeScript."""
    def replace(match: re.Match) -> str:
        key = match.group(1)
        base = key.split(".")[0]
        if not base or base not in payload:
            return match.group(0)
        value: Any = payload
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)
    return re.sub(r"{{\s*([\w.]+)\s*}}", replace, template)


# --- the extension --------------------------------------------------------------------------------------------


def test_a_dry_run_prints_the_stack_file_and_writes_nothing(tmp_path: Path) -> None:
    code, out, err = extension(tmp_path)
    assert code == 0, out + err
    assert not (tmp_path / "stacks").exists()
    assert f"--- new file {tmp_path / 'stacks' / 'Pulumi.acme.yaml'}" in out
    assert "+  mailer:firestoreLocation: nam5" in out
    assert "Dry run: nothing written" in out


def test_the_extension_file_becomes_a_stack_the_model_accepts(tmp_path: Path) -> None:
    code, out, err = extension(tmp_path, "--write")
    assert code == 0, out + err
    stack_file = tmp_path / "stacks" / "Pulumi.acme.yaml"
    values = model_check(stack_file)
    assert {key: values[key] for key in (
        "gcp:project", "mailer:region", "mailer:firestoreLocation", "mailer:database", "mailer:mailCollection",
        "mailer:usersCollection", "mailer:templatesCollection", "mailer:smtpConnectionUri", "mailer:defaultFrom",
        "mailer:defaultReplyTo", "mailer:ttlExpireType", "mailer:ttlExpireValue", "mailer:memory")} == {
        "gcp:project": PROJECT,
        "mailer:region": "us-central1",
        "mailer:firestoreLocation": "nam5",
        "mailer:database": "(default)",
        "mailer:mailCollection": "mail",
        "mailer:usersCollection": "users",
        "mailer:templatesCollection": "email-templates",
        "mailer:smtpConnectionUri": "smtp://postmaster@mg.acme.example:587",
        "mailer:defaultFrom": "Acme <noreply@acme.example>",
        "mailer:defaultReplyTo": "support@acme.example",
        "mailer:ttlExpireType": "day",
        "mailer:ttlExpireValue": "30",
        "mailer:memory": "512Mi",
    }
    # The password is a Secret Manager reference: copied by a command, never through this file.
    assert ("gcloud secrets versions access latest --secret=ext-firestore-send-email-SMTP_PASSWORD "
            f"--project={PROJECT} | pulumi config set --secret mailer:smtpPassword --stack acme") in out
    assert "smtpPassword" not in stack_file.read_text() and "secrets/" not in stack_file.read_text()
    not_carried = out.split("Not carried over:\n", 1)[1]
    assert "TLS_OPTIONS: the extension never passes TLS_OPTIONS" in not_carried
    assert ("TEMPLATES_COLLECTION: `pulumi up` writes every templates/*.yaml into email-templates as documents the stack owns"
            in out)
    assert f"python -m ops.import_config templates --project {PROJECT} --collection email-templates" in out
    assert "TTL: this stack manages the Firestore TTL policy on delivery.expireAt of the mail collection group" in out
    # Every event type the extension had enabled travels, to the same channel.
    written = yaml.safe_load(stack_file.read_text())["config"]
    assert written["mailer:events"] == ["onStart", "onSuccess", "onError", "onPending"]
    assert written["mailer:eventsChannel"] == f"projects/{PROJECT}/locations/us-central1/channels/firebase"
    assert "ALLOWED_EVENT_TYPES" not in not_carried


def test_oauth2_parameters_become_xoauth2_settings_and_secret_commands(tmp_path: Path) -> None:
    code, out, err = extension(tmp_path, "--write", env=OAUTH2_ENV)
    assert code == 0, out + err
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.acme.yaml").read_text())["config"]
    assert config["mailer:smtpConnectionUri"] == "smtp://alerts%40acme.example@smtp.gmail.com:587"
    assert config["mailer:region"] == "europe-west1" and config["mailer:firestoreLocation"] == "eur3"
    assert config["mailer:database"] == "mail-db" and config["mailer:mailCollection"] == "tenants/acme/mail"
    assert config["mailer:smtpAuthMethod"] == "XOAUTH2"
    assert config["mailer:oauth2TokenUrl"] == "https://oauth2.googleapis.com/token"
    assert "mailer:oauth2ClientId" not in config  # its value is in Secret Manager: fetched by the printed command
    assert (f'pulumi config set mailer:oauth2ClientId "$(gcloud secrets versions access latest '
            f'--secret=ext-firestore-send-email-CLIENT_ID --project={PROJECT})" --stack acme') in out
    for secret, key in (("CLIENT_SECRET", "oauth2ClientSecret"), ("REFRESH_TOKEN", "oauth2RefreshToken")):
        assert (f"gcloud secrets versions access latest --secret=ext-firestore-send-email-{secret} --project={PROJECT} "
                f"| pulumi config set --secret mailer:{key} --stack acme") in out
    # With the client id the command sets, the model accepts the stack.
    values = stack_config(tmp_path / "stacks" / "Pulumi.acme.yaml")
    values["mailer:oauth2ClientId"] = "1234-abc.apps.googleusercontent.com"
    assert settings_problems(values)[1] == []


def test_an_existing_stack_file_is_shown_as_a_diff_and_keeps_what_the_import_does_not_set(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    existing = (
        "encryptionsalt: v1:abcdefgh:v1:ijklmnop:qrstuvwx\n"
        "config:\n"
        "  gcp:project: acme-mailer-prod\n"
        "  mailer:region: europe-west1\n"
        "  mailer:maxInstances: 7\n"
        "  mailer:smtpPassword:\n"
        "    secure: v1:c2VjcmV0LWNpcGhlcnRleHQ=\n"
    )
    (stacks / "Pulumi.acme.yaml").write_text(existing)
    code, out, _ = extension(tmp_path)
    assert code == 0
    assert f"--- {stacks / 'Pulumi.acme.yaml'}" in out
    assert "-  mailer:region: europe-west1" in out and "+  mailer:region: us-central1" in out
    assert (stacks / "Pulumi.acme.yaml").read_text() == existing  # a dry run
    code, out, _ = extension(tmp_path, "--write")
    assert code == 0
    written = yaml.safe_load((stacks / "Pulumi.acme.yaml").read_text())
    assert written["encryptionsalt"] == "v1:abcdefgh:v1:ijklmnop:qrstuvwx"
    assert written["config"]["mailer:smtpPassword"] == {"secure": "v1:c2VjcmV0LWNpcGhlcnRleHQ="}
    assert written["config"]["mailer:maxInstances"] == 7
    assert written["config"]["mailer:region"] == "us-central1"
    model_check(stacks / "Pulumi.acme.yaml")
    code, out, _ = extension(tmp_path)
    assert f"{stacks / 'Pulumi.acme.yaml'}: unchanged" in out


def test_passwords_in_the_uri_or_in_the_file_are_never_printed_or_written(tmp_path: Path) -> None:
    env = tmp_path / "firestore-send-email.env"
    env.write_text(
        "# hand-edited: a password in the URI and a value instead of a secret reference\n"
        "DATABASE_REGION=nam5\n"
        "DEFAULT_FROM=\"Acme <noreply@acme.example>\"\n"
        "SMTP_CONNECTION_URI=smtps://alerts@acme.example:hunter2-in-the-uri@smtp.gmail.com:465\n"
        "SMTP_PASSWORD='a-plain-Pa55word-in-the-file'\n"
    )
    code, out, err = extension(tmp_path, "--write", env=env)
    assert code == 0, out + err
    written = (tmp_path / "stacks" / "Pulumi.acme.yaml").read_text()
    for secret in ("hunter2-in-the-uri", "a-plain-Pa55word-in-the-file"):
        assert secret not in out + err + written
    assert yaml.safe_load(written)["config"]["mailer:smtpConnectionUri"] == "smtps://alerts%40acme.example@smtp.gmail.com:465"
    assert "from SMTP_CONNECTION_URI (its password left out)" in written
    assert "the SMTP_PASSWORD value in the file (not shown)" in out
    assert "pulumi config set --secret mailer:smtpPassword --stack acme   # type it when asked" in out
    model_check(tmp_path / "stacks" / "Pulumi.acme.yaml")


def test_later_env_files_override_earlier_ones_and_unknown_parameters_are_listed(tmp_path: Path) -> None:
    override = tmp_path / f"firestore-send-email.env.{PROJECT}"
    override.write_text("MAIL_COLLECTION=mail-prod\nSOMETHING_ELSE=1\nfirebaseextensions.v1beta.function/memory=2048\n")
    code, out, _ = run("extension", str(EXTENSION_ENV), str(override), "--stack", "acme", "--project", PROJECT,
                       "--stacks-dir", str(tmp_path / "stacks"), "--write")
    assert code == 0, out
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.acme.yaml").read_text())["config"]
    assert config["mailer:mailCollection"] == "mail-prod"
    assert config["mailer:memory"] == "2048Mi" and config["mailer:cpu"] == "1"  # Cloud Run needs 1 vCPU above 1 GiB
    assert "SOMETHING_ELSE: not a parameter of firestore-send-email 0.2.8" in out
    model_check(tmp_path / "stacks" / "Pulumi.acme.yaml")


def test_env_parsing_follows_dotenv() -> None:
    parsed = import_config.parse_env_text(
        "# comment\n\nexport A=1\nB = \"two words\"\nC='#not a comment'\nD=x # trailing\nE=\"line\\nbreak\"\nA=3\n"
        "firebaseextensions.v1beta.function/location=europe-west3"
    )
    assert parsed == {"A": "3", "B": "two words", "C": "#not a comment", "D": "x", "E": "line\nbreak",
                      "firebaseextensions.v1beta.function/location": "europe-west3"}
    with pytest.raises(import_config.ImportError_, match="line 1: expected KEY=value"):
        import_config.parse_env_text("no equals sign")


def test_a_result_the_model_refuses_is_reported_and_not_written(tmp_path: Path) -> None:
    env = tmp_path / "firestore-send-email.env"
    env.write_text("DATABASE_REGION=nam5\nDEFAULT_FROM=noreply@acme.example\nSMTP_CONNECTION_URI=smtp://u@smtp.acme.example:25\n")
    code, out, _ = extension(tmp_path, "--write", env=env)
    assert code == 1
    assert "The result fails the config model or the template checks:\n  mailer:smtpConnectionUri uses port 25, which Google Cloud blocks" in out
    assert "Nothing written" in out and not (tmp_path / "stacks").exists()


# --- Logto ----------------------------------------------------------------------------------------------------


def test_the_logto_connector_becomes_a_stack_and_templates(tmp_path: Path) -> None:
    code, out, err = logto(tmp_path, "--write")
    assert code == 0, out + err
    values = model_check(tmp_path / "stacks" / "Pulumi.acme.yaml")
    assert values["mailer:smtpConnectionUri"] == "smtps://postmaster%40mg.acme.example@smtp.mailgun.org:465?name=mailer.acme.example"
    assert values["mailer:defaultFrom"] == "Acme <noreply@acme.example>"
    assert values["mailer:defaultReplyTo"] == "support@acme.example"
    assert values["mailer:templatesCollection"] == "mail-templates"
    assert (f"jq -j .auth.pass {LOGTO_JSON} | pulumi config set --secret mailer:smtpPassword --stack acme") in out
    not_carried = out.split("Not carried over:\n", 1)[1]
    assert "customHeaders: no stack setting adds headers to every email" in not_carried
    assert "templates[5] (SignIn): a second template for this usageType; Logto uses the first one only" in not_carried
    # Every template file loads as the deployment loads it.
    files = load_template_files(tmp_path / "templates")
    assert sorted(files) == ["ForgotPassword", "Generic", "OrganizationInvitation", "Register", "SignIn"]
    assert set(files["SignIn"].document) == {"subject", "text"}
    assert set(files["Register"].document) == {"subject", "html"}


def test_imported_templates_render_through_the_function_as_logto_renders_them(tmp_path: Path) -> None:
    assert logto(tmp_path, "--write")[0] == 0
    connector = yaml.safe_load(LOGTO_JSON.read_text())
    payload = {"code": "905127", "link": "https://acme.example/verify?t=1", "application": {"name": "Acme"},
               "organization": {"name": "Acme Labs"}}
    firsts: dict[str, dict[str, Any]] = {}
    for entry in connector["templates"]:
        firsts.setdefault(entry["usageType"], entry)
    for name, template_file in load_template_files(tmp_path / "templates").items():
        entry = firsts[name]
        field = "text" if entry["contentType"] == "text/plain" else "html"
        rendered = Template(parse_template_document(name, template_file.document, "templates/")).render(payload).fields
        assert rendered["subject"] == logto_render(entry["subject"], payload), name
        if field == "text":
            assert rendered[field] == logto_render(entry["content"], payload), name
        else:
            # Values are HTML-escaped here (Logto inserts them raw): the same page once a browser decodes it.
            assert html.unescape(rendered[field]) == logto_render(entry["content"], payload), name
    organization = load_template_files(tmp_path / "templates")["OrganizationInvitation"].document
    escaped = Template(parse_template_document("OrganizationInvitation", organization, "t")).render(payload).fields["html"]
    assert 'href="https://acme.example/verify?t&#x3D;1"' in escaped
    # The literal {{#if}} in Register's html stays literal, as Logto prints it.
    register = Template(parse_template_document("Register", load_template_files(tmp_path / "templates")["Register"].document, "t"))
    assert "Logto prints this {{#if}} as it is." in register.render(payload).fields["html"]


def test_the_logto_password_is_never_printed_or_written(tmp_path: Path) -> None:
    code, out, err = logto(tmp_path, "--write")
    assert code == 0
    written = "".join(path.read_text() for path in tmp_path.rglob("*.yaml"))
    assert LOGTO_PASSWORD not in out + err + written
    # The same through the real command line.
    result = subprocess.run(
        [sys.executable, "-m", "ops.import_config", "logto", str(LOGTO_JSON), "--stack", "acme", "--project", PROJECT,
         "--region", "us-central1", "--firestore-location", "nam5", "--stacks-dir", str(tmp_path / "cli"),
         "--templates-dir", str(tmp_path / "cli-templates")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert LOGTO_PASSWORD not in result.stdout + result.stderr
    assert "Dry run: nothing written" in result.stdout


def test_logto_needs_the_google_cloud_locations_it_does_not_have(tmp_path: Path) -> None:
    code, out, _ = logto(tmp_path, "--write", location=())
    assert code == 1
    assert "  mailer:region is not set; run `pulumi config set mailer:region <value>`" in out
    assert "  mailer:firestoreLocation is not set" in out
    assert not (tmp_path / "stacks").exists() and not (tmp_path / "templates").exists()


def test_logto_oauth2_and_connection_options(tmp_path: Path) -> None:
    source = tmp_path / "connector.json"
    source.write_text(json.dumps({
        "host": "smtp.office365.com", "port": 587, "secure": False, "requireTLS": True,
        "servername": "smtp.office365.com", "greetingTimeout": 5000,
        "tls": {"rejectUnauthorized": True, "ciphers": "HIGH"},
        "auth": {"type": "OAuth2", "user": "alerts@acme.example", "clientId": "client-123",
                 "clientSecret": "oauth-client-Secret-never-shown", "refreshToken": "refresh-Token-never-shown",
                 "accessToken": "access-Token-never-shown",
                 "accessUrl": "https://login.microsoftonline.com/acme/oauth2/v2.0/token"},
        "fromEmail": "alerts@acme.example", "templates": [],
    }))
    code, out, err = logto(tmp_path, "--write", source=source)
    assert code == 0, out + err
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.acme.yaml").read_text())["config"]
    written = (tmp_path / "stacks" / "Pulumi.acme.yaml").read_text()
    for secret in ("oauth-client-Secret-never-shown", "refresh-Token-never-shown", "access-Token-never-shown"):
        assert secret not in out + err + written
    assert config["mailer:smtpConnectionUri"] == (
        "smtp://alerts%40acme.example@smtp.office365.com:587?tlsServername=smtp.office365.com&requireTLS=true&greetingTimeout=5000")
    assert "tls.ciphers: not a TLS option of this function" in out
    assert config["mailer:smtpAuthMethod"] == "XOAUTH2" and config["mailer:oauth2ClientId"] == "client-123"
    assert config["mailer:oauth2TokenUrl"] == "https://login.microsoftonline.com/acme/oauth2/v2.0/token"
    assert f"jq -j .auth.clientSecret {source} | pulumi config set --secret mailer:oauth2ClientSecret --stack acme" in out
    assert f"jq -j .auth.refreshToken {source} | pulumi config set --secret mailer:oauth2RefreshToken --stack acme" in out
    assert "auth.accessToken: a short-lived token" in out
    model_check(tmp_path / "stacks" / "Pulumi.acme.yaml")


def test_help_describes_both_sources() -> None:
    result = subprocess.run([sys.executable, "-m", "ops.import_config", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "{extension,logto,templates}" in result.stdout and "--write" in result.stdout
    for kind in ("extension", "logto", "templates"):
        sub = subprocess.run([sys.executable, "-m", "ops.import_config", kind, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0 and "--write" in sub.stdout and "--project" in sub.stdout


# --- the extension's templates collection ---------------------------------------------------------------------------


def test_the_extensions_templates_collection_becomes_template_files(firestore_emulator, firestore_client, unique_collection, tmp_path: Path) -> None:
    documents = {
        # The extension's documented `following` template, with its `path` attachment.
        "following": {"subject": "@{{username}} is now following you!",
                      "html": "Just writing to let you know that <code>@{{username}}</code> ({{name}}) is now following you.",
                      "attachments": [{"filename": "{{username}}.jpg", "path": "{{imagePath}}"}]},
        "footer": {"partial": True, "text": "Unsubscribe: {{unsubscribeUrl}}", "html": "<a href='{{unsubscribeUrl}}'>Unsubscribe</a>"},
        "receipt": {"subject": "Receipt {{order.id}}", "text": "{{#each items}}{{title}}\n{{/each}}{{> footer}}",
                    "attachments": [{"filename": "{{order.id}}.txt", "content": "{{order.total}}"}], "notes": "kept by the app"},
        "bad name": {"subject": "s"},
        "numbers": {"subject": 42},
    }
    for name, fields in documents.items():
        firestore_client.collection(unique_collection).document(name).set(fields)
    templates = tmp_path / "templates"
    argv = ["templates", "--project", firestore_emulator.project, "--collection", unique_collection, "--templates-dir", str(templates)]
    code, out, err = run(*argv)
    assert code == 0, out + err
    assert not templates.exists() and "Dry run: nothing written" in out
    code, out, err = run(*argv, "--write")
    assert code == 0, out + err
    files = load_template_files(templates)
    assert sorted(files) == ["following", "footer", "receipt"]
    assert files["following"].document == {"subject": documents["following"]["subject"], "html": documents["following"]["html"]}
    assert files["following"].sample_data == {"username": "example username", "name": "example name"}
    assert files["footer"].document == {"text": "Unsubscribe: {{unsubscribeUrl}}", "html": "<a href='{{unsubscribeUrl}}'>Unsubscribe</a>", "partial": True}
    assert files["receipt"].document["attachments"] == [{"filename": "{{order.id}}.txt", "content": "{{order.total}}"}]
    assert files["receipt"].sample_data == {"order": {"id": "example order.id", "total": "example order.total"}, "title": "example title"}
    not_carried = out.split("Not carried over:\n", 1)[1]
    assert f"{unique_collection}/following.attachments[0]: uses path: this function sends inline content only" in not_carried
    assert f"{unique_collection}/receipt.notes: not a template field" in not_carried
    assert f"{unique_collection}/bad name: not usable as a template file name" in not_carried
    assert f"{unique_collection}/numbers.subject: not text (int)" in not_carried
    assert f"{unique_collection}/numbers: nothing left to deploy" in not_carried
    # What the files deploy renders through the function with their sample data.
    partials = {"footer": files["footer"].document}
    from mailer.templates import PartialSet
    partial_set = PartialSet([parse_template_document(name, fields, "templates/") for name, fields in partials.items()])
    rendered = Template(parse_template_document("receipt", files["receipt"].document, "templates/"), partial_set).render(
        {"order": {"id": "A-1", "total": "9.99"}, "items": [{"title": "Book"}, {"title": "Pen"}], "unsubscribeUrl": "https://u.example"}).fields
    assert rendered["subject"] == "Receipt A-1"
    assert rendered["text"] == "Book\nPen\nUnsubscribe: https://u.example"
    assert rendered["attachments"] == [{"filename": "A-1.txt", "content": "9.99"}]


def test_an_empty_or_missing_templates_collection_is_an_error(firestore_emulator, unique_collection, tmp_path: Path) -> None:
    code, out, err = run("templates", "--project", firestore_emulator.project, "--collection", unique_collection,
                         "--templates-dir", str(tmp_path / "templates"))
    assert code == 1 and out == ""
    assert err == f"import-config: Firestore {firestore_emulator.project}/(default)/{unique_collection}: the collection {unique_collection!r} has no documents\n"


def test_a_template_the_deployment_would_refuse_stops_the_write(firestore_emulator, firestore_client, unique_collection, tmp_path: Path) -> None:
    # Under Firestore's 1 MiB, over the 1,000,000 bytes the deployment allows a template document.
    firestore_client.collection(unique_collection).document("huge").set({"subject": "s", "html": "x" * 1_010_000})
    code, out, _ = run("templates", "--project", firestore_emulator.project, "--collection", unique_collection,
                       "--templates-dir", str(tmp_path / "templates"), "--write")
    assert code == 1
    assert (f"The result fails the config model or the template checks:\n  {tmp_path / 'templates' / 'huge.yaml'}: subject: "
            "the document would be over 1000000 bytes") in out
    assert not (tmp_path / "templates").exists()


@pytest.mark.parametrize("password", ["Pq7/Zx9?Kw3#Vb5@Mn1:Jh2", "Qz8?Wy4", "Rx6@Tu2", "Sl5/Vw3", "Hx4#Yk8"])
def test_a_password_with_uri_delimiters_in_the_uri_is_left_out_whole(tmp_path: Path, password: str) -> None:
    env = tmp_path / "firestore-send-email.env"
    env.write_text("DATABASE_REGION=nam5\nDEFAULT_FROM=noreply@acme.example\n"
                   f"SMTP_CONNECTION_URI=smtps://mailer:{password}@smtp.acme.example:465\n")
    code, out, err = extension(tmp_path, "--write", env=env)
    assert code == 0, out + err
    written = (tmp_path / "stacks" / "Pulumi.acme.yaml").read_text()
    assert yaml.safe_load(written)["config"]["mailer:smtpConnectionUri"] == "smtps://mailer@smtp.acme.example:465"
    for piece in {password, *re.split(r"[/?#@:]", password)} - {""}:
        assert piece not in out + err + written


def test_uri_options_the_function_reads_are_carried_and_the_others_listed(tmp_path: Path) -> None:
    from mailer.smtp_uri import KNOWN_OPTIONS
    assert import_config.KNOWN_URI_OPTIONS == KNOWN_OPTIONS  # the import's copy follows the function
    env = tmp_path / "firestore-send-email.env"
    env.write_text("DATABASE_REGION=nam5\nDEFAULT_FROM=noreply@acme.example\n"
                   "SMTP_CONNECTION_URI=smtp://mailer@smtp.acme.example:587?pool=true&tls.rejectUnauthorized=false&debug=true&maxConnections=3\n")
    code, out, _ = extension(tmp_path, "--write", env=env)
    assert code == 0, out
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.acme.yaml").read_text())["config"]
    assert config["mailer:smtpConnectionUri"] == "smtp://mailer@smtp.acme.example:587?pool=true&tlsRejectUnauthorized=false&maxConnections=3"
    assert "SMTP_CONNECTION_URI option debug: not an option of this function" in out
    from mailer.smtp_uri import parse_smtp_uri
    settings = parse_smtp_uri(config["mailer:smtpConnectionUri"], password_override="x")  # the function reads it
    assert settings.tls_reject_unauthorized is False and settings.max_connections == 3


def test_a_microsoft_host_is_carried_as_the_extension_really_connected(tmp_path: Path) -> None:
    env = tmp_path / "firestore-send-email.env"
    env.write_text("DATABASE_REGION=nam5\nDEFAULT_FROM=alerts@acme.example\n"
                   "SMTP_CONNECTION_URI=smtps://alerts@acme.example@smtp.office365.com:465?pool=false\n")
    code, out, _ = extension(tmp_path, "--write", env=env)
    assert code == 0, out
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.acme.yaml").read_text())["config"]
    assert config["mailer:smtpConnectionUri"] == "smtp://alerts%40acme.example@smtp-mail.outlook.com:587"
    assert "the extension ignored its host, port and options and connected to smtp-mail.outlook.com:587" in out
    assert "SMTP_CONNECTION_URI options: the extension ignored them for Microsoft hosts" in out
    model_check(tmp_path / "stacks" / "Pulumi.acme.yaml")


def test_events_without_a_channel_are_listed_not_half_carried(tmp_path: Path) -> None:
    env = tmp_path / "firestore-send-email.env"
    env.write_text("DATABASE_REGION=nam5\nDEFAULT_FROM=noreply@acme.example\nSMTP_CONNECTION_URI=smtp://u@smtp.acme.example:587\n"
                   "ALLOWED_EVENT_TYPES=firebase.extensions.firestore-send-email.v1.onSuccess\n")
    code, out, _ = extension(tmp_path, "--write", env=env)
    assert code == 0, out
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.acme.yaml").read_text())["config"]
    assert "mailer:events" not in config
    assert "ALLOWED_EVENT_TYPES: no EVENTARC_CHANNEL in the file" in out


def test_a_connector_as_the_management_api_returns_it(tmp_path: Path) -> None:
    """GET /api/connectors/{id} wraps the settings: {id, connectorId, config: {...}, metadata, ...}."""
    source = tmp_path / "connector.json"
    source.write_text(json.dumps({"id": "abc123", "connectorId": "simple-mail-transfer-protocol", "syncProfile": False,
                                  "config": json.loads(LOGTO_JSON.read_text()), "metadata": {"target": "smtp"}}))
    code, out, err = logto(tmp_path, "--write", source=source)
    assert code == 0, out + err
    values = model_check(tmp_path / "stacks" / "Pulumi.acme.yaml")
    assert values["mailer:smtpConnectionUri"].startswith("smtps://postmaster%40mg.acme.example@smtp.mailgun.org:465")
    assert f"jq -j .config.auth.pass {source} | pulumi config set --secret mailer:smtpPassword --stack acme" in out
    assert LOGTO_PASSWORD not in out + err
    assert sorted(load_template_files(tmp_path / "templates")) == ["ForgotPassword", "Generic", "OrganizationInvitation", "Register", "SignIn"]


def test_imported_logto_templates_pass_the_rule_for_files_in_templates(tmp_path: Path) -> None:
    """tests/templates/test_template_files.py's rule for templates/: the sample data renders into a sendable
    email whose bodies show every top-level text value (html escapes none of the generated values)."""
    from email import message_from_bytes, policy

    from mailer.addresses import parse_mailbox
    from mailer.compose import ComposeDefaults, compose
    from mailer.document import parse_mail_document

    assert logto(tmp_path, "--write")[0] == 0
    defaults = ComposeDefaults(default_from=parse_mailbox("Acme <noreply@acme.example>", "from"), default_reply_to=None,
                               max_message_bytes=10 * 2**20)
    for name, template_file in load_template_files(tmp_path / "templates").items():
        rendered = Template(parse_template_document(name, template_file.document, "templates/")).render(template_file.sample_data)
        message = message_from_bytes(compose(parse_mail_document({"to": "ada@example.com", "message": rendered.merged_into(None)}),
                                             defaults).message.as_bytes(), policy=policy.default)
        assert message["Subject"], name
        bodies = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
        for value in template_file.sample_data.values():
            if isinstance(value, str):
                assert any(value in body for body in bodies), (name, value)


@pytest.mark.parametrize("stack", ["../evil", "a/b", "", "prod dev", "x\ny"])
def test_a_stack_name_that_is_not_pulumis_is_refused_before_anything_is_written(
        tmp_path: Path, stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    # --stack becomes a file name: stacks/Pulumi.../evil.yaml would land outside the stacks folder.
    with pytest.raises(SystemExit) as exited:
        run("extension", str(EXTENSION_ENV), "--stack", stack, "--project", PROJECT, "--stacks-dir", str(tmp_path / "stacks"), "--write")
    assert exited.value.code == 2
    assert "stack names are letters, digits, '-', '_' and '.'" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.yaml"))


def test_a_parameter_reference_other_than_the_project_id_is_listed_not_copied(tmp_path: Path) -> None:
    env = tmp_path / "firestore-send-email.env"
    env.write_text(EXTENSION_ENV.read_text().replace(
        "DEFAULT_REPLY_TO=support@acme.example", "DEFAULT_REPLY_TO=${param:DEFAULT_FROM}"))
    code, out, err = extension(tmp_path, env=env)
    assert code == 0, out + err
    assert "mailer:defaultReplyTo" not in out.split("Set these", 1)[0]
    assert ("DEFAULT_REPLY_TO: refers to ${param:DEFAULT_FROM}, which only Firebase resolves; write the value into "
            "the file (or set the stack key yourself)") in out.split("Not carried over:\n", 1)[1]
    # The secret reference keeps its ${param:PROJECT_NUMBER}: it becomes the gcloud command as before.
    assert "--secret=ext-firestore-send-email-SMTP_PASSWORD" in out


@pytest.mark.parametrize("kind", ["extension", "logto"])
def test_a_file_that_is_not_utf8_is_one_line_not_a_traceback(tmp_path: Path, kind: str) -> None:
    source = tmp_path / ("firestore-send-email.env" if kind == "extension" else "connector.json")
    original = EXTENSION_ENV if kind == "extension" else LOGTO_JSON
    source.write_bytes(original.read_text().encode("utf-16"))  # as PowerShell's `>` saves it
    code, out, err = extension(tmp_path, env=source) if kind == "extension" else logto(tmp_path, source=source)
    assert code == 1 and out == ""
    assert err == (f"import-config: {source}: not UTF-8 text (byte 0); firebase and Logto write UTF-8: save the file "
                   "as UTF-8 (PowerShell's `>` writes UTF-16)\n")


@pytest.mark.parametrize("content", [
    "Path C:\\{{code}}", "a\\\\{{ code }}", "x\\{{y {{code}}", "x\\\\{{#if}} {{code}}", "\\{{code}}\\{{", "\\\\\\{{ code }}",
])
def test_backslashes_before_braces_print_as_logto_prints_them(content: str) -> None:
    # Handlebars reads one backslash before {{ as an escape and drops one of two or more; Logto prints them all.
    payload = {"code": "905127"}
    document = {"subject": "s", "text": import_config.logto_to_handlebars(content)}
    assert Template(parse_template_document("t", document, "t")).render(payload).fields["text"] == logto_render(content, payload)

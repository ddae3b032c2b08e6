"""`make import-config` / `python -m ops.import_config`: a stack file from the configuration you already have.

Two sources, one result (stacks/Pulumi.<stack>.yaml in this program's keys, checked by its config model):

    extension  the `extensions/firestore-send-email.env` file `firebase ext:export` writes for an installed
               "Trigger Email from Firestore" (plus, optionally, the per-project `.env.<project>` files
               after it, later files winning as they do for `firebase deploy`)
    logto      a Logto SMTP connector's configuration JSON (host, port, auth, secure, fromEmail, replyTo,
               templates by usageType); its templates become templates/<usageType>.yaml
    templates  the extension's templates collection (read from Firestore) as templates/<name>.yaml, so
               they are reviewed and deployed with the stack (no stack file is written)

    python -m ops.import_config extension extensions/firestore-send-email.env --stack prod --project acme-prod
    python -m ops.import_config logto smtp-connector.json --stack prod --project acme-prod \\
        --region us-central1 --firestore-location nam5
    python -m ops.import_config templates --project acme-prod --collection email-templates

A dry run by default: it prints the files it would write (a unified diff when a file exists), the
secrets to set and how, and what cannot be carried over and why. `--write` writes them; it refuses when
the result fails the config model. An existing stack file keeps every key the import does not set
(encrypted secrets, encryptionsalt and the like included).

Passwords, client secrets and refresh tokens are never printed or written: the extension's file holds
only Secret Manager references to them, and for a Logto JSON the printed command reads the value from
the file itself (`pulumi config set --secret` must encrypt it with the stack's key).

Exit codes: 0 done (dry run, or files written), 1 the input cannot be read or the result fails the
config model (each problem on one line naming the key), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO
from urllib.parse import parse_qsl, quote, unquote, urlencode

import yaml

from infra import config as infra_config
from infra.config import CPU_NEEDED_FOR_MEMORY, PASSWORD_KEY, parse_memory_bytes, settings_problems
from infra.stack_files import PROJECT_FILE, REPO_ROOT, project_defaults

EXTENSION = "firestore-send-email"
EXTENSION_VERSION = "0.2.8"
EVENT_PREFIX = f"firebase.extensions.{EXTENSION}.v1."
# The lifecycle events this program publishes (issue 12 item 3), by the extension's short names: the
# config model's list when it has one.
FUNCTION_EVENTS: tuple[str, ...] = infra_config.EVENT_NAMES
SYSTEM_PREFIX = "firebaseextensions.v1beta.function/"
DEFAULT_EXTENSION_REGION = "us-central1"  # the system parameter's default
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # nodemailer's OAuth2 default is Google's
DEFAULT_TEMPLATES_COLLECTION = "mail-templates"
SECRET_REFERENCE = re.compile(r"^projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/]+)(?:/versions/(?P<version>[^/]+))?$")
PARAM_REFERENCE = re.compile(r"\$\{param:(?P<name>[A-Z_]+)\}")
# Logto's connector-kit replaceSendMessageHandlebars: `{{ name }}` or `{{ a.b }}`, nothing else.
LOGTO_PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
LOGTO_CONTENT_TYPES = {"text/plain": "text", "text/html": "html"}
# Logto's zod defaults for the connection timeouts (ms): not carried, this function's are shorter on purpose.
LOGTO_DEFAULT_TIMEOUTS = {"connectionTimeout": 120_000, "greetingTimeout": 30_000, "socketTimeout": 600_000}
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# SMTP_CONNECTION_URI options the function reads (mailer.smtp_uri.KNOWN_OPTIONS; tests/ops ties the two). The
# function refuses any other option, so the import carries these, renames nodemailer's TLS spellings and
# lists the rest as not carried.
KNOWN_URI_OPTIONS = (
    "allowPlaintextAuth", "authMethod", "connectionTimeout", "greetingTimeout", "ignoreTLS", "maxConnections",
    "maxMessages", "name", "oauth2ClientId", "oauth2TokenUrl", "pool", "requireTLS", "socketTimeout", "tlsCaFile",
    "tlsRejectUnauthorized", "tlsServername",
)
# The extension sends through nodemailer's "hotmail" service when the URI's host contains one of these.
MICROSOFT_HOST_MARKS = ("outlook", "office365", "hotmail")
MICROSOFT_SERVICE_HOSTPORT = "smtp-mail.outlook.com:587"
RENAMED_URI_OPTIONS = {"tls.rejectUnauthorized": "tlsRejectUnauthorized", "tls.servername": "tlsServername",
                       "servername": "tlsServername"}
SAMPLE_VALUES = {"code": "123456", "link": "https://example.com/verify/abc123", "locale": "en"}
# Stack keys in the order the stack file lists them.
KEY_ORDER = (
    "gcp:project", "mailer:region", "mailer:firestoreLocation", "mailer:database", "mailer:mailCollection",
    "mailer:usersCollection", "mailer:templatesCollection", "mailer:smtpConnectionUri", "mailer:smtpAuthMethod",
    "mailer:oauth2TokenUrl", "mailer:oauth2ClientId", "mailer:defaultFrom", "mailer:defaultReplyTo",
    "mailer:ttlExpireType", "mailer:ttlExpireValue", "mailer:memory", "mailer:cpu", "mailer:timeoutSeconds",
    "mailer:minInstances", "mailer:maxInstances", "mailer:events", "mailer:eventsChannel",
)


class ImportError_(ValueError):
    """The input cannot be read or mapped; one line."""


@dataclass
class SecretStep:
    key: str  # e.g. mailer:smtpPassword
    source: str  # where the value lives now
    command: str  # what to run (never contains the value)
    plain: bool = False  # a plain setting whose value only a command can fetch (e.g. the OAuth2 client id)


# The stack's secrets: never in a stack file by this command, never declared in Pulumi.yaml.
SECRET_KEYS = (PASSWORD_KEY, "mailer:oauth2ClientSecret", "mailer:oauth2RefreshToken")
# What the config model is shown for a plain key that a printed command sets later.
PENDING_VALUE = "set-by-the-printed-command"


@dataclass
class Plan:
    """What an import produces: stack settings, secrets to set, template files, and what stays behind."""

    source: str
    settings: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # key -> where the value came from
    secrets: list[SecretStep] = field(default_factory=list)
    not_carried: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    notes: list[str] = field(default_factory=list)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> file content

    def set(self, key: str, value: Any, origin: str) -> None:
        self.settings[key] = value
        self.origins[key] = origin

    def skip(self, what: str, why: str) -> None:
        self.not_carried.append((what, why))


# --- reading ------------------------------------------------------------------------------------------


def parse_env_text(text: str) -> dict[str, str]:
    """A dotenv file as `firebase ext:export` writes it (KEY=value, sorted, unquoted) and as people edit it
    (comments, blank lines, 'single' or "double" quoted values, `export KEY=...`). Later lines win."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or any(char.isspace() for char in key):
            raise ImportError_(f"line {number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            quote_char, value = value[0], value[1:-1]
            if quote_char == '"':
                value = re.sub(r"\\([nr\"\\])", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _not_utf8(error: UnicodeDecodeError) -> str:
    return (f"not UTF-8 text (byte {error.start}); firebase and Logto write UTF-8: save the file as UTF-8 "
            "(PowerShell's `>` writes UTF-16)")


def read_env_files(paths: Sequence[Path]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ImportError_(f"{path}: cannot read ({error.strerror})") from None
        except UnicodeDecodeError as error:
            raise ImportError_(f"{path}: {_not_utf8(error)}") from None
        try:
            merged.update(parse_env_text(text))
        except ImportError_ as error:
            raise ImportError_(f"{path}: {error}") from None
    return merged


def declared_keys(project_file: Path = PROJECT_FILE) -> dict[str, str]:
    """{`mailer:key`: declared type} for every setting Pulumi.yaml declares, plus gcp:project."""
    declared = yaml.safe_load(project_file.read_text())["config"]
    keys = {f"mailer:{name}": (spec or {}).get("type", "string") for name, spec in declared.items()}
    keys["gcp:project"] = "string"
    return keys


# --- shared mapping helpers -----------------------------------------------------------------------------


def _substitute(value: str, project: str) -> str:
    return value.replace("${param:PROJECT_ID}", project)


def _user_part(user: str) -> str:
    """A user name for the URI's userinfo: reserved characters percent-encoded (the extension's own example
    `smtps://username@gmail.com@smtp.gmail.com:465` has a bare '@'), existing escapes kept."""
    return quote(unquote(user), safe="!$&'()*+,;=-._~")


def _build_uri(scheme: str, user: Optional[str], host: str, port: int | str, options: Mapping[str, str]) -> str:
    userinfo = f"{_user_part(user)}@" if user else ""
    query = f"?{urlencode(dict(options), safe='/:')}" if options else ""
    return f"{scheme}://{userinfo}{host}:{port}{query}"


def _split_uri(uri: str) -> tuple[str, Optional[str], bool, str, str]:
    """(scheme, user, had_password, host:port, query) of an smtp[s] URI. The userinfo ends at the last '@'
    of the whole URI, so a password holding an unencoded '/', '?', '#' or '@' never ends up in the host, the
    port or the query (from where it would be written to the stack file). The password is dropped here."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ImportError_("SMTP_CONNECTION_URI: expected smtp://... or smtps://...")
    userinfo, at, hostquery = rest.rpartition("@")
    hostport, _, query = hostquery.partition("?")
    hostport = hostport.rstrip("/")
    if not at:
        return scheme.lower(), None, False, hostport, query
    user, colon, _password = userinfo.partition(":")
    return scheme.lower(), user or None, bool(colon), hostport, query


def _secret_command(key: str, reference: str, project: str, stack: str, pipe_from: Optional[str] = None) -> str:
    """The command that copies a secret into the stack without showing it."""
    setter = f"pulumi config set --secret {key} --stack {shlex.quote(stack)}"
    if pipe_from is not None:
        return f"{pipe_from} | {setter}"
    match = SECRET_REFERENCE.match(reference)
    assert match
    version = match.group("version") or "latest"
    return (
        f"gcloud secrets versions access {shlex.quote(version)} --secret={shlex.quote(match.group('secret'))} "
        f"--project={shlex.quote(project)} | {setter}"
    )


def _plain_from_secret_command(key: str, reference: str, project: str, stack: str) -> str:
    match = SECRET_REFERENCE.match(reference)
    assert match
    version = match.group("version") or "latest"
    read = (
        f"gcloud secrets versions access {shlex.quote(version)} --secret={shlex.quote(match.group('secret'))} "
        f"--project={shlex.quote(project)}"
    )
    return f"pulumi config set {key} \"$({read})\" --stack {shlex.quote(stack)}"


def _memory_and_cpu(plan: Plan, value: str, origin: str) -> None:
    memory = f"{value}Mi" if value.isdigit() else value
    try:
        size = parse_memory_bytes(memory)
    except ValueError:
        plan.skip(origin, f"{value!r} is not a memory size this program reads; set mailer:memory yourself")
        return
    plan.set("mailer:memory", memory, origin)
    for threshold, needed in CPU_NEEDED_FOR_MEMORY:
        if size > threshold:
            plan.set("mailer:cpu", f"{needed:g}", f"{origin} (Cloud Run needs {needed:g} vCPU for {memory})")
            break


def _require_key(plan: Plan, declared: Mapping[str, str], key: str, value: Any, origin: str) -> bool:
    """Set `key` when this version of the program has it; otherwise record why it stays behind."""
    if key not in declared:
        plan.skip(origin, f"this version of the program has no {key} setting (Pulumi.yaml does not declare it)")
        return False
    plan.set(key, value, origin)
    return True


# --- the extension ----------------------------------------------------------------------------------------


EXTENSION_DIRECT = {
    "DATABASE": "mailer:database",
    "DATABASE_REGION": "mailer:firestoreLocation",
    "MAIL_COLLECTION": "mailer:mailCollection",
    "USERS_COLLECTION": "mailer:usersCollection",
    "TEMPLATES_COLLECTION": "mailer:templatesCollection",
    "DEFAULT_FROM": "mailer:defaultFrom",
    "DEFAULT_REPLY_TO": "mailer:defaultReplyTo",
    "TTL_EXPIRE_TYPE": "mailer:ttlExpireType",
}
EXTENSION_INTEGERS = {
    "TTL_EXPIRE_VALUE": "mailer:ttlExpireValue",
    f"{SYSTEM_PREFIX}timeoutSeconds": "mailer:timeoutSeconds",
    f"{SYSTEM_PREFIX}minInstances": "mailer:minInstances",
    f"{SYSTEM_PREFIX}maxInstances": "mailer:maxInstances",
}
OAUTH2_PARAMS = ("HOST", "OAUTH_PORT", "OAUTH_SECURE", "USER", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN")
EXTENSION_NOT_CARRIED = {
    "TLS_OPTIONS": (
        "the extension never passes TLS_OPTIONS to its SMTP connection (it hands them to nodemailer's "
        "createTransport(uri, defaults) as message defaults), so they had no effect; "
        "this function verifies certificates and takes tlsServername, tlsCaFile and tlsRejectUnauthorized "
        "as SMTP URI options if you need them"
    ),
    f"{SYSTEM_PREFIX}labels": "resource labels are not a setting of this program",
    f"{SYSTEM_PREFIX}vpcConnector": "this program deploys no VPC connector setting; egress goes to the internet",
    f"{SYSTEM_PREFIX}vpcConnectorEgressSettings": "this program deploys no VPC connector setting",
    "_EVENT_ARC_REGION": None,  # folded into EVENTARC_CHANNEL
    "AUTH_TYPE": None,  # read with the OAuth2 parameters
}


def plan_from_extension(params: Mapping[str, str], *, project: str, stack: str, declared: Mapping[str, str],
                        source: str) -> Plan:
    plan = Plan(source=source)
    plan.set("gcp:project", project, "--project")
    seen: set[str] = set()
    # `${param:PROJECT_ID}` is what ext:export put where the project id was.
    values = {key: _substitute(value, project) for key, value in params.items()}
    for param, value in list(values.items()):
        reference = PARAM_REFERENCE.search(value)
        if reference and not SECRET_REFERENCE.match(value):  # secret references keep ${param:PROJECT_NUMBER}
            plan.skip(param, f"refers to ${{param:{reference['name']}}}, which only Firebase resolves; "
                             "write the value into the file (or set the stack key yourself)")
            del values[param]

    for param, key in EXTENSION_DIRECT.items():
        if values.get(param, "") != "":
            plan.set(key, values[param], param)
        seen.add(param)
    for param, key in EXTENSION_INTEGERS.items():
        if values.get(param, "") == "":
            seen.add(param)
            continue
        seen.add(param)
        try:
            plan.set(key, int(values[param]), param)
        except ValueError:
            plan.skip(param, f"{values[param]!r} is not a whole number")

    location = values.get(f"{SYSTEM_PREFIX}location") or values.get("LOCATION")
    seen.update({f"{SYSTEM_PREFIX}location", "LOCATION"})
    if location:
        plan.set("mailer:region", location, f"{SYSTEM_PREFIX}location" if values.get(f"{SYSTEM_PREFIX}location") else "LOCATION")
    else:
        plan.set("mailer:region", DEFAULT_EXTENSION_REGION, f"the extension's default ({SYSTEM_PREFIX}location is not in the file)")
    if values.get(f"{SYSTEM_PREFIX}memory"):
        _memory_and_cpu(plan, values[f"{SYSTEM_PREFIX}memory"], f"{SYSTEM_PREFIX}memory")
    seen.add(f"{SYSTEM_PREFIX}memory")

    auth_type = values.get("AUTH_TYPE", "UsernamePassword") or "UsernamePassword"
    seen.add("AUTH_TYPE")
    if auth_type == "OAuth2":
        _extension_oauth2(plan, values, project=project, stack=stack, declared=declared)
    else:
        _extension_password(plan, values, project=project, stack=stack)
        for param in OAUTH2_PARAMS:
            if values.get(param) and param != "OAUTH_PORT" and param != "OAUTH_SECURE":
                plan.skip(param, f"AUTH_TYPE is {auth_type}, so the extension ignored it")
    seen.update({"SMTP_CONNECTION_URI", "SMTP_PASSWORD", *OAUTH2_PARAMS})

    _extension_events(plan, values, declared=declared)
    seen.update({"ALLOWED_EVENT_TYPES", "EVENTARC_CHANNEL"})

    for param, why in EXTENSION_NOT_CARRIED.items():
        seen.add(param)
        if why and values.get(param):
            plan.skip(param, why)
    for param in sorted(set(values) - seen):
        plan.skip(param, f"not a parameter of {EXTENSION} {EXTENSION_VERSION}; nothing in this program reads it")

    if plan.settings.get("mailer:templatesCollection"):
        collection = plan.settings["mailer:templatesCollection"]
        plan.notes.append(
            f"TEMPLATES_COLLECTION: `pulumi up` writes every templates/*.yaml into {collection} as documents the stack "
            "owns, and fails on a name that is already a document there. Export the extension's templates first "
            f"(`python -m ops.import_config templates --project {project} --collection {collection}`), review them, and "
            "point mailer:templatesCollection at a new collection (e.g. mail-templates) while both run."
        )
    if plan.settings.get("mailer:ttlExpireType", "never") != "never":
        plan.notes.append(
            "TTL: this stack manages the Firestore TTL policy on delivery.expireAt of the mail collection group "
            "itself. A policy you created by hand for the extension is taken over by `pulumi up` (setting a field's "
            "TTL is an update in Firestore, nothing to import) and removed by `pulumi destroy`."
        )
    return plan


def _extension_password(plan: Plan, values: Mapping[str, str], *, project: str, stack: str) -> None:
    uri = values.get("SMTP_CONNECTION_URI", "")
    had_password = False
    if uri:
        try:
            scheme, user, had_password, hostport, query = _split_uri(uri)
        except ImportError_ as error:
            plan.skip("SMTP_CONNECTION_URI", str(error))
        else:
            host = hostport.rsplit(":", 1)[0].lower()
            if any(name in host for name in MICROSOFT_HOST_MARKS):
                # The extension's helpers.ts: such hosts go through nodemailer's "hotmail" service whatever the
                # URI says (smtp-mail.outlook.com:587, STARTTLS), with the URI's user and password only.
                rebuilt = f"smtp://{_user_part(user) + '@' if user else ''}{MICROSOFT_SERVICE_HOSTPORT}"
                plan.notes.append(
                    f"SMTP_CONNECTION_URI names a Microsoft host ({host}): the extension ignored its host, port and options "
                    f"and connected to {MICROSOFT_SERVICE_HOSTPORT} (STARTTLS); the stack does the same, written out. For "
                    "XOAUTH2 instead of a password, see mailer:smtpProvider microsoft365."
                )
                if query:
                    plan.skip("SMTP_CONNECTION_URI options", "the extension ignored them for Microsoft hosts")
            else:
                query = _carried_options(plan, query)
                rebuilt = f"{scheme}://{_user_part(user) + '@' if user else ''}{hostport}{'?' + query if query else ''}"
            plan.set("mailer:smtpConnectionUri", rebuilt, "SMTP_CONNECTION_URI" + (" (its password left out)" if had_password else ""))
    reference = values.get("SMTP_PASSWORD", "")
    if reference and SECRET_REFERENCE.match(reference):
        plan.secrets.append(SecretStep(PASSWORD_KEY, f"Secret Manager secret {SECRET_REFERENCE.match(reference).group('secret')} (SMTP_PASSWORD)",
                                       _secret_command(PASSWORD_KEY, reference, project, stack)))
        if had_password:
            plan.notes.append("SMTP_CONNECTION_URI also held a password; the extension used SMTP_PASSWORD instead, and so will this stack.")
    elif reference:
        # A value rather than a reference (a hand-edited file or .secret.local): never shown.
        plan.secrets.append(SecretStep(PASSWORD_KEY, "the SMTP_PASSWORD value in the file (not shown)",
                                       f"pulumi config set --secret {PASSWORD_KEY} --stack {shlex.quote(stack)}   # type it when asked"))
    elif had_password:
        plan.secrets.append(SecretStep(PASSWORD_KEY, "the password inside SMTP_CONNECTION_URI (not shown, not written)",
                                       f"pulumi config set --secret {PASSWORD_KEY} --stack {shlex.quote(stack)}   # type it when asked"))
    else:
        plan.secrets.append(SecretStep(PASSWORD_KEY, "nowhere: the extension had no SMTP password",
                                       f"pulumi config set --secret {PASSWORD_KEY} --stack {shlex.quote(stack)}   # this program requires one"))


def _carried_options(plan: Plan, query: str) -> str:
    """The URI's query with the options the function reads; the others listed as not carried."""
    if not query:
        return ""
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        target = RENAMED_URI_OPTIONS.get(name, name)
        if target in KNOWN_URI_OPTIONS:
            kept.append((target, value))
        else:
            plan.skip(f"SMTP_CONNECTION_URI option {name}",
                      f"not an option of this function (it refuses unknown options; it reads {', '.join(KNOWN_URI_OPTIONS)})")
    return urlencode(kept, safe="/:")


def _extension_oauth2(plan: Plan, values: Mapping[str, str], *, project: str, stack: str, declared: Mapping[str, str]) -> None:
    host, user = values.get("HOST", ""), values.get("USER", "")
    if not host:
        plan.skip("AUTH_TYPE", "OAuth2 without HOST: there is no SMTP server to carry")
        return
    secure = values.get("OAUTH_SECURE", "true").lower() != "false"
    port = values.get("OAUTH_PORT", "") or "465"
    plan.set("mailer:smtpConnectionUri", _build_uri("smtps" if secure else "smtp", user or None, host, port, {}),
             "HOST, OAUTH_PORT, OAUTH_SECURE, USER")
    if values.get("SMTP_CONNECTION_URI"):
        plan.skip("SMTP_CONNECTION_URI", "AUTH_TYPE is OAuth2, so the extension connected to HOST:OAUTH_PORT instead")
    if not _require_key(plan, declared, "mailer:smtpAuthMethod", "XOAUTH2", "AUTH_TYPE=OAuth2"):
        return
    _require_key(plan, declared, "mailer:oauth2TokenUrl", GOOGLE_TOKEN_URL,
                 "the extension's OAuth2 token endpoint (nodemailer's default, Google's)")
    for param, key, plain in (("CLIENT_ID", "mailer:oauth2ClientId", True),
                              ("CLIENT_SECRET", "mailer:oauth2ClientSecret", False),
                              ("REFRESH_TOKEN", "mailer:oauth2RefreshToken", False)):
        reference = values.get(param, "")
        if not reference:
            plan.skip(param, f"not set in the file; set {key} yourself")
            continue
        if plain and key not in declared:
            plan.skip(param, f"this version of the program has no {key} setting")
            continue
        if not SECRET_REFERENCE.match(reference):
            command = f"pulumi config set {'' if plain else '--secret '}{key} --stack {shlex.quote(stack)}   # type it when asked"
        elif plain:
            command = _plain_from_secret_command(key, reference, project, stack)
        else:
            command = _secret_command(key, reference, project, stack)
        plan.secrets.append(SecretStep(key, f"{param} ({'a Secret Manager reference' if SECRET_REFERENCE.match(reference) else 'a value, not shown'})",
                                       command, plain=plain))


def _extension_events(plan: Plan, values: Mapping[str, str], *, declared: Mapping[str, str]) -> None:
    allowed = [item.strip() for item in values.get("ALLOWED_EVENT_TYPES", "").split(",") if item.strip()]
    if not allowed:
        if values.get("EVENTARC_CHANNEL"):
            plan.skip("EVENTARC_CHANNEL", "no ALLOWED_EVENT_TYPES: the extension published no events")
        return
    names = []
    for event_type in allowed:
        short = event_type.removeprefix(EVENT_PREFIX)
        if short in FUNCTION_EVENTS:
            names.append(short)
        else:
            plan.skip(f"ALLOWED_EVENT_TYPES {event_type}",
                      f"not an event this function publishes ({', '.join(FUNCTION_EVENTS)})")
    if not names:
        return
    kind = declared["mailer:events"]
    channel = values.get("EVENTARC_CHANNEL", "")
    if not channel:
        plan.skip("ALLOWED_EVENT_TYPES", "no EVENTARC_CHANNEL in the file: set mailer:events with mailer:eventsChannel "
                  "or mailer:eventsTopic yourself")
        return
    if _require_key(plan, declared, "mailer:eventsChannel", channel, "EVENTARC_CHANNEL"):
        plan.set("mailer:events", names if kind == "array" else ",".join(names), "ALLOWED_EVENT_TYPES")


# --- Logto ------------------------------------------------------------------------------------------------


LOGTO_NOT_CARRIED = {
    "logger": "the function never logs SMTP conversations (they carry addresses and message data)",
    "debug": "the function never logs SMTP conversations (they carry addresses and message data)",
    "disableFileAccess": "nothing to carry: the function never reads files or URLs for a message",
    "disableUrlAccess": "nothing to carry: the function never reads files or URLs for a message",
    "customHeaders": "no stack setting adds headers to every email; put them in each mail document's `headers`",
    "localAddress": "a Cloud Function's source address is not configurable",
    "dnsTimeout": "not a setting of this function (the connection timeout covers the lookup)",
}
LOGTO_KNOWN = {"host", "port", "auth", "secure", "fromEmail", "replyTo", "templates", "name", "servername", "tls",
               "requireTLS", "ignoreTLS", *LOGTO_DEFAULT_TIMEOUTS, *LOGTO_NOT_CARRIED}


def plan_from_logto(config: Any, *, project: str, stack: str, region: Optional[str], firestore_location: Optional[str],
                    templates_collection: str, declared: Mapping[str, str], source: str, source_path: Path) -> Plan:
    if not isinstance(config, dict):
        raise ImportError_(f"{source}: expected the connector's JSON object (host, port, auth, fromEmail, templates)")
    original = config
    if "host" not in config and isinstance(config.get("config"), dict):
        # A connector as Logto's Management API returns it (GET /api/connectors/{id}): its settings are `config`.
        config = config["config"]
    plan = Plan(source=source)
    plan.set("gcp:project", project, "--project")
    if region:
        plan.set("mailer:region", region, "--region")
    if firestore_location:
        plan.set("mailer:firestoreLocation", firestore_location, "--firestore-location")

    host, port = config.get("host"), config.get("port")
    if not isinstance(host, str) or not host:
        raise ImportError_(f"{source}: host: expected the SMTP server's name")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool):
        raise ImportError_(f"{source}: port: expected a number")
    secure = config.get("secure", False) is True
    auth = config.get("auth") or {}
    if not isinstance(auth, dict):
        raise ImportError_(f"{source}: auth: expected an object")
    auth_type = str(auth.get("type") or "login").lower()
    options = _logto_uri_options(plan, config)
    user = auth.get("user") if isinstance(auth.get("user"), str) else None
    prefix = ".config" if "host" not in original and isinstance(original.get("config"), dict) else ""
    pipe = f"jq -j {prefix}.auth.{{}} {shlex.quote(str(source_path))}"

    if auth_type == "oauth2":
        if "privateKey" in auth or "serviceClient" in auth:
            plan.skip("auth.privateKey/serviceClient", "two-legged service-account OAuth2 is not supported; use a refresh token (XOAUTH2) or a password")
        else:
            plan.set("mailer:smtpAuthMethod", "XOAUTH2", "auth.type")
            token_url = auth.get("accessUrl") or GOOGLE_TOKEN_URL
            _require_key(plan, declared, "mailer:oauth2TokenUrl", token_url, "auth.accessUrl" if auth.get("accessUrl") else "nodemailer's default token endpoint (Google's)")
            if auth.get("clientId"):
                _require_key(plan, declared, "mailer:oauth2ClientId", auth["clientId"], "auth.clientId")
            for field_name, key in (("clientSecret", "mailer:oauth2ClientSecret"), ("refreshToken", "mailer:oauth2RefreshToken")):
                if auth.get(field_name):
                    plan.secrets.append(SecretStep(key, f"auth.{field_name} in {source} (not shown)",
                                                   _secret_command(key, "", project, stack, pipe_from=pipe.format(field_name))))
                else:
                    plan.skip(f"auth.{field_name}", f"not in the connector; set {key} with `pulumi config set --secret`")
            if auth.get("accessToken"):
                plan.skip("auth.accessToken", "a short-lived token; the function gets its own from the refresh token")
    elif auth.get("pass"):
        plan.secrets.append(SecretStep(PASSWORD_KEY, f"auth.pass in {source} (not shown)",
                                       _secret_command(PASSWORD_KEY, "", project, stack, pipe_from=pipe.format("pass"))))
    else:
        plan.secrets.append(SecretStep(PASSWORD_KEY, "nowhere: the connector has no auth.pass",
                                       f"pulumi config set --secret {PASSWORD_KEY} --stack {shlex.quote(stack)}   # this program requires one"))
    plan.set("mailer:smtpConnectionUri", _build_uri("smtps" if secure else "smtp", user, host, port, options),
             "host, port, secure, auth.user" + (", " + ", ".join(options) if options else ""))

    if isinstance(config.get("fromEmail"), str):
        plan.set("mailer:defaultFrom", config["fromEmail"], "fromEmail")
    if isinstance(config.get("replyTo"), str) and config["replyTo"]:
        plan.set("mailer:defaultReplyTo", config["replyTo"], "replyTo")
    for key, why in LOGTO_NOT_CARRIED.items():
        if config.get(key) not in (None, False, {}, ""):
            plan.skip(key, why)
    for key in sorted(set(config) - LOGTO_KNOWN):
        plan.skip(key, "not a Logto SMTP connector setting this import knows; nothing in this program reads it")

    _logto_templates(plan, config.get("templates"), source)
    if plan.templates:
        plan.set("mailer:templatesCollection", templates_collection, "templates (deployed from templates/*.yaml)")
        plan.notes.append(
            "Logto placeholders map to Handlebars one to one ({{code}}, {{link}}, {{application.name}}); two "
            "differences: a placeholder whose top-level name is missing from the data prints as empty text here "
            "(Logto leaves '{{name}}' in the email), and values in html are HTML-escaped here (Logto inserts them raw)."
        )
    return plan


def _logto_uri_options(plan: Plan, config: Mapping[str, Any]) -> dict[str, str]:
    options: dict[str, str] = {}
    if isinstance(config.get("name"), str) and config["name"]:
        options["name"] = config["name"]
    tls = config.get("tls") if isinstance(config.get("tls"), dict) else {}
    servername = config.get("servername") or tls.get("servername")
    if isinstance(servername, str) and servername:
        options["tlsServername"] = servername
    if tls.get("rejectUnauthorized") is False:
        options["tlsRejectUnauthorized"] = "false"
        plan.notes.append("tls.rejectUnauthorized is false: certificate checks stay off (tlsRejectUnauthorized=false); turn them on when you can.")
    for key in sorted(set(tls) - {"servername", "rejectUnauthorized"}):
        plan.skip(f"tls.{key}", "not a TLS option of this function (it takes tlsServername, tlsCaFile, tlsRejectUnauthorized)")
    for key in ("requireTLS", "ignoreTLS"):
        if config.get(key) is True:
            options[key] = "true"
    for key, logto_default in LOGTO_DEFAULT_TIMEOUTS.items():
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value != logto_default:
            options[key] = str(value)
        elif value is not None:
            plan.notes.append(f"{key} is Logto's default ({logto_default} ms): not carried; this function's default is shorter so a dead server fails within one invocation.")
    return options


def logto_to_handlebars(content: str) -> str:
    """Logto's replacement rule as Handlebars: each `{{ path }}` becomes `{{path}}`; every other `{{` (which
    Logto prints as it is) is escaped as `\\{{`, so Handlebars prints it as it is too."""
    out: list[str] = []
    position = 0
    for match in LOGTO_PLACEHOLDER.finditer(content):
        out.append(_handlebars_literal(content[position:match.start()]))
        if out[-1].endswith("\\"):  # Handlebars drops one of two or more backslashes before a tag
            out.append("\\")
        out.append("{{" + match.group(1) + "}}")
        position = match.end()
    out.append(_handlebars_literal(content[position:]))
    return "".join(out)


def _handlebars_literal(text: str) -> str:
    """Text Handlebars prints as it is: `{{` escaped as `\\{{`; where backslashes come right before it, they
    are doubled up to an empty comment first (Handlebars would read them as an escape or drop one)."""
    return re.sub(r"(\\*)\{\{", lambda m: (m[1] + "\\{{!}}" if m[1] else "") + "\\{{", text)


def _sample_data(*texts: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for text in texts:
        for path in LOGTO_PLACEHOLDER.findall(text):
            parts = path.split(".")
            node = data
            for part in parts[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
            node.setdefault(parts[-1], SAMPLE_VALUES.get(path, f"example {path}"))
    return data


def _logto_templates(plan: Plan, templates: Any, source: str) -> None:
    if templates is None:
        return
    if not isinstance(templates, list):
        raise ImportError_(f"{source}: templates: expected a list")
    for index, entry in enumerate(templates):
        where = f"templates[{index}]"
        if not isinstance(entry, dict):
            plan.skip(where, "not an object")
            continue
        usage = entry.get("usageType")
        field_name = LOGTO_CONTENT_TYPES.get(entry.get("contentType"))
        if not isinstance(usage, str) or not TEMPLATE_NAME.fullmatch(usage) or re.fullmatch(r"__.*__", usage):
            plan.skip(where, f"usageType {usage!r} is not usable as a template name")
            continue
        if field_name is None:
            plan.skip(f"{where} ({usage})", f"contentType {entry.get('contentType')!r}: expected text/plain or text/html")
            continue
        if usage in plan.templates:
            plan.skip(f"{where} ({usage})", "a second template for this usageType; Logto uses the first one only")
            continue
        subject, content = str(entry.get("subject") or ""), str(entry.get("content") or "")
        plan.templates[usage] = {
            "description": f"Imported from the Logto SMTP connector: usageType {usage}, {entry['contentType']}.",
            "subject": logto_to_handlebars(subject),
            field_name: logto_to_handlebars(content),
            "data": _sample_data(subject, content) or {"code": SAMPLE_VALUES["code"]},
        }


# --- the extension's templates collection ---------------------------------------------------------------------

TEMPLATE_TEXT_FIELDS = ("subject", "text", "html", "amp")
TEMPLATE_ATTACHMENT_KEYS = ("filename", "content", "encoding", "contentType", "cid", "contentDisposition")
HANDLEBARS_PATH = re.compile(r"\{\{\{?~?\s*([A-Za-z_][\w.]*)\s*~?\}?\}\}")
HANDLEBARS_KEYWORDS = {"else", "this"}


def template_file_from_document(name: str, fields: Mapping[str, Any], collection: str, plan: Plan) -> Optional[dict[str, Any]]:
    """A template document of the extension's collection as a templates/<name>.yaml content, or None with
    the reason recorded in `plan`."""
    where = f"{collection}/{name}"
    if not TEMPLATE_NAME.fullmatch(name) or re.fullmatch(r"__.*__", name):
        plan.skip(where, "not usable as a template file name (letters, digits, '_', '-', '.')")
        return None
    partial = fields.get("partial") is True
    content: dict[str, Any] = {"description": f"Imported from the Firestore collection {collection}."}
    for key in TEMPLATE_TEXT_FIELDS:
        value = fields.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            plan.skip(f"{where}.{key}", f"not text ({type(value).__name__}); the extension would have failed on it too")
            continue
        content[key] = value
    attachments = fields.get("attachments")
    if attachments:
        kept = []
        for index, item in enumerate(attachments if isinstance(attachments, list) else []):
            if not isinstance(item, Mapping):
                plan.skip(f"{where}.attachments[{index}]", "not a map")
                continue
            refused = sorted(set(item) & {"path", "href", "raw"})
            if refused:
                plan.skip(f"{where}.attachments[{index}]", f"uses {', '.join(refused)}: this function sends inline content only "
                          "(put the bytes in template.data and write content: \"{{name}}\" with encoding: base64)")
                continue
            unknown = sorted(set(item) - set(TEMPLATE_ATTACHMENT_KEYS))
            if unknown or not all(isinstance(value, str) for value in item.values()):
                plan.skip(f"{where}.attachments[{index}]", f"has {', '.join(unknown) or 'non-text values'}; an attachment here has "
                          f"{', '.join(TEMPLATE_ATTACHMENT_KEYS)}")
                continue
            kept.append(dict(item))
        if kept:
            content["attachments"] = kept
    if partial:
        content["partial"] = True
    if not any(key in content for key in (*TEMPLATE_TEXT_FIELDS, "attachments")):
        plan.skip(where, "nothing left to deploy (no subject, text, html, amp or usable attachments)")
        return None
    for key in sorted(set(fields) - {*TEMPLATE_TEXT_FIELDS, "attachments", "partial"}):
        plan.skip(f"{where}.{key}", "not a template field; not deployed (the function ignores it)")
    if not partial:
        # Sample data for the tests that render every template before a stack gets it: one value per
        # variable the template uses. Replace it with realistic data when you review the file.
        sources = [value for key, value in content.items() if key in TEMPLATE_TEXT_FIELDS]
        sources += [value for item in content.get("attachments", []) for value in item.values()]
        data: dict[str, Any] = {}
        for source in sources:
            for path in HANDLEBARS_PATH.findall(source):
                parts = path.split(".")
                if parts[0] in HANDLEBARS_KEYWORDS:
                    continue
                node = data
                for part in parts[:-1]:
                    child = node.setdefault(part, {})
                    node = child if isinstance(child, dict) else {}
                node.setdefault(parts[-1], f"example {path}")
        content["data"] = data
    return content


def plan_from_templates(client: Any, collection: str, source: str) -> Plan:
    plan = Plan(source=source)
    count = 0
    for snapshot in client.collection(collection).stream():
        count += 1
        content = template_file_from_document(snapshot.id, snapshot.to_dict() or {}, collection, plan)
        if content is not None:
            plan.templates[snapshot.id] = content
    if count == 0:
        raise ImportError_(f"{source}: the collection {collection!r} has no documents")
    plan.notes.append(
        "Each template's `data` is generated sample data (one value per variable) for the tests that render "
        "every template: replace it with realistic values when you review the files."
    )
    return plan


# --- rendering ----------------------------------------------------------------------------------------------


class _BlockDumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100000)


def render_template(content: Mapping[str, Any]) -> str:
    text = _dump(dict(content))
    if yaml.safe_load(text) != dict(content):  # PyYAML falls back to quoting when a block cannot hold it
        text = yaml.safe_dump(dict(content), sort_keys=False, allow_unicode=True, width=100000)
    return text


def render_stack(plan: Plan, stack: str, existing: Optional[Mapping[str, Any]]) -> str:
    lines = [
        f"# Stack {stack}, imported by `python -m ops.import_config` from {plan.source}.",
        "# Secrets are not in this file: set them with the commands the import printed (pulumi config set --secret).",
    ]
    existing = dict(existing or {})
    for key, value in existing.items():  # encryptionsalt, secretsprovider, encryptedkey ...
        if key != "config":
            lines.append(_dump({key: value}).rstrip("\n"))
    lines.append("config:")
    ordered = [key for key in KEY_ORDER if key in plan.settings] + sorted(set(plan.settings) - set(KEY_ORDER))
    for key in ordered:
        lines.append(f"  # from {plan.origins[key]}")
        lines.extend("  " + line for line in _dump({key: plan.settings[key]}).rstrip("\n").splitlines())
    kept = {key: value for key, value in (existing.get("config") or {}).items() if key not in plan.settings}
    if kept:
        lines.append("  # kept from the existing stack file")
        for key, value in kept.items():
            lines.extend("  " + line for line in _dump({key: value}).rstrip("\n").splitlines())
    return "\n".join(lines) + "\n"


def stack_problems(text: str, declared: Mapping[str, str], pending: Iterable[str] = (),
                   project_file: Path = PROJECT_FILE) -> list[str]:
    """What the config model (and Pulumi's declared keys) say about a stack file's text. `pending`: plain
    keys a printed command sets later; the model sees a stand-in for them."""
    config = (yaml.safe_load(text) or {}).get("config") or {}
    problems = [f"{key} is not a setting of this program (Pulumi.yaml does not declare it)"
                for key, value in config.items()
                if key.startswith("mailer:") and key not in declared and key not in SECRET_KEYS
                and not (isinstance(value, Mapping) and "secure" in value)]
    values = dict(project_defaults(project_file))
    values.update({key: PENDING_VALUE for key in pending})
    for key, value in config.items():
        if isinstance(value, Mapping) and "secure" in value:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)  # as the Pulumi CLI hands structured config to the program
        values[key] = str(value)
    _, model_problems = settings_problems(values)
    return problems + model_problems


# --- the command ----------------------------------------------------------------------------------------------


@dataclass
class Output:
    path: Path
    text: str
    old: Optional[str]


def outputs_for(plan: Plan, *, stack: Optional[str], stacks_dir: Path, templates_dir: Path) -> list[Output]:
    outputs = []
    if stack is not None:
        stack_path = stacks_dir / f"Pulumi.{stack}.yaml"
        old = stack_path.read_text(encoding="utf-8") if stack_path.exists() else None
        existing = yaml.safe_load(old) if old else None
        outputs.append(Output(stack_path, render_stack(plan, stack, existing if isinstance(existing, dict) else None), old))
    for name, content in sorted(plan.templates.items()):
        path = templates_dir / f"{name}.yaml"
        outputs.append(Output(path, render_template(content), path.read_text(encoding="utf-8") if path.exists() else None))
    return outputs


def show(output: Output, out: TextIO) -> None:
    if output.old is None:
        out.write(f"--- new file {output.path}\n")
        out.writelines(f"+{line}" for line in output.text.splitlines(keepends=True))
    elif output.old == output.text:
        out.write(f"--- {output.path}: unchanged\n")
    else:
        out.writelines(difflib.unified_diff(output.old.splitlines(keepends=True), output.text.splitlines(keepends=True),
                                            str(output.path), f"{output.path} (imported)"))
    out.write("\n")


def report(plan: Plan, problems: list[str], out: TextIO) -> None:
    if plan.secrets:
        out.write("Set these with the commands shown (the values are never printed or written by this command):\n")
        for step in plan.secrets:
            out.write(f"  {step.key}  from {step.source}\n    {step.command}\n")
    if plan.not_carried:
        out.write("Not carried over:\n")
        out.writelines(f"  {what}: {why}\n" for what, why in plan.not_carried)
    if plan.notes:
        out.write("Notes:\n")
        out.writelines(f"  {note}\n" for note in plan.notes)
    if problems:
        out.write("The result fails the config model or the template checks:\n")
        out.writelines(f"  {problem}\n" for problem in problems)


_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _stack_name(value: str) -> str:
    """Pulumi's rule for stack names; it also keeps the file inside the stacks folder (no `/`)."""
    if not _STACK_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: stack names are letters, digits, '-', '_' and '.'")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.import_config",
        description="Write a stack file (and templates) from an installed Trigger Email extension's parameters "
                    "or a Logto SMTP connector JSON, or template files from the extension's templates collection. "
                    "A dry run unless --write.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sources = parser.add_subparsers(dest="kind", required=True, metavar="{extension,logto,templates}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", required=True, type=_stack_name, help="stack name: writes stacks/Pulumi.<stack>.yaml")
    common.add_argument("--project", required=True, help="Google Cloud project id (gcp:project; replaces ${param:PROJECT_ID})")
    common.add_argument("--region", help="Cloud Functions region (mailer:region); overrides the source's")
    common.add_argument("--firestore-location", help="Firestore database location (mailer:firestoreLocation), e.g. nam5")
    common.add_argument("--stacks-dir", type=Path, default=REPO_ROOT / "stacks", help="where stack files live (default: stacks/)")
    common.add_argument("--write", action="store_true", help="write the files (default: print what would be written)")
    extension = sources.add_parser("extension", parents=[common], help="from `firebase ext:export`'s extensions/<instance>.env",
                                   description="Map firestore-send-email's parameters to this program's stack settings.")
    extension.add_argument("env_files", nargs="+", type=Path, metavar="ENV_FILE",
                           help="extensions/firestore-send-email.env, then any .env.<project> overrides")
    logto = sources.add_parser("logto", parents=[common], help="from a Logto SMTP connector's configuration JSON",
                               description="Map a Logto SMTP connector's settings and templates.")
    logto.add_argument("json_file", type=Path, metavar="JSON_FILE", help="the connector's configuration JSON")
    logto.add_argument("--templates-dir", type=Path, default=REPO_ROOT / "templates", help="where template files go (default: templates/)")
    logto.add_argument("--templates-collection", default=DEFAULT_TEMPLATES_COLLECTION,
                       help=f"mailer:templatesCollection for the templates (default: {DEFAULT_TEMPLATES_COLLECTION})")
    templates = sources.add_parser(
        "templates", help="from the extension's templates collection in Firestore",
        description="Write each document of the extension's templates collection as templates/<name>.yaml (the "
                    "files the stack deploys). Reads Firestore with Application Default Credentials; "
                    "FIRESTORE_EMULATOR_HOST points it at an emulator. Writes no stack file.")
    templates.add_argument("--project", required=True, help="Google Cloud project id")
    templates.add_argument("--database", default="(default)", help="Firestore database id (default: (default))")
    templates.add_argument("--collection", required=True, help="the extension's TEMPLATES_COLLECTION")
    templates.add_argument("--templates-dir", type=Path, default=REPO_ROOT / "templates", help="where template files go (default: templates/)")
    templates.add_argument("--write", action="store_true", help="write the files (default: print what would be written)")
    return parser.parse_args(argv)


def read_templates_collection(args: argparse.Namespace) -> Plan:
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc loads: its C core logs on shutdown
    from google.api_core import exceptions as google_errors
    from google.auth import exceptions as auth_errors
    from google.cloud import firestore

    source = f"Firestore {args.project}/{args.database}/{args.collection}"
    try:
        client = firestore.Client(project=args.project, database=args.database)
        try:
            return plan_from_templates(client, args.collection, source)
        finally:
            client.close()
    except (google_errors.GoogleAPICallError, google_errors.RetryError, auth_errors.GoogleAuthError) as error:
        raise ImportError_(f"{source}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None


def template_problems(outputs: Sequence[Output]) -> list[str]:
    """Each template file as the deployment loads it (infra.templates), from a scratch folder."""
    import tempfile

    from infra.templates import TemplateFileError, load_template_files

    problems = []
    with tempfile.TemporaryDirectory(prefix="import-config-") as folder:
        for output in outputs:
            if output.path.suffix != ".yaml" or output.path.name.startswith("Pulumi."):
                continue
            scratch = Path(folder) / output.path.name
            scratch.write_text(output.text, encoding="utf-8")
            try:
                load_template_files(Path(folder))
            except TemplateFileError as error:
                problems.append(str(error).replace(str(scratch), str(output.path)))
            scratch.unlink()
    return problems


def build_plan(args: argparse.Namespace, declared: Mapping[str, str]) -> Plan:
    if args.kind == "templates":
        return read_templates_collection(args)
    if args.kind == "extension":
        params = read_env_files(args.env_files)
        plan = plan_from_extension(params, project=args.project, stack=args.stack, declared=declared,
                                   source=", ".join(str(path) for path in args.env_files))
        if args.region:
            plan.set("mailer:region", args.region, "--region")
        if args.firestore_location:
            plan.set("mailer:firestoreLocation", args.firestore_location, "--firestore-location")
        return plan
    try:
        config = json.loads(args.json_file.read_text(encoding="utf-8"))
    except OSError as error:
        raise ImportError_(f"{args.json_file}: cannot read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise ImportError_(f"{args.json_file}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except UnicodeDecodeError as error:
        raise ImportError_(f"{args.json_file}: {_not_utf8(error)}") from None
    return plan_from_logto(config, project=args.project, stack=args.stack, region=args.region,
                           firestore_location=args.firestore_location, templates_collection=args.templates_collection,
                           declared=declared, source=str(args.json_file), source_path=args.json_file)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parse_args(argv)
    declared = declared_keys()
    try:
        plan = build_plan(args, declared)
    except ImportError_ as error:
        err.write(f"import-config: {error}\n")
        return 1
    templates_dir = getattr(args, "templates_dir", REPO_ROOT / "templates")
    stack = getattr(args, "stack", None)
    outputs = outputs_for(plan, stack=stack, stacks_dir=getattr(args, "stacks_dir", REPO_ROOT / "stacks"), templates_dir=templates_dir)
    problems = template_problems(outputs)
    if stack is not None:
        problems = stack_problems(outputs[0].text, declared, pending=[step.key for step in plan.secrets if step.plain]) + problems
    for output in outputs:
        show(output, out)
    report(plan, problems, out)
    if problems:
        out.write("Nothing written: fix the source or pass the missing setting (e.g. --region, --firestore-location).\n"
                  if args.write else "Fix these before --write.\n")
        return 1
    if not args.write:
        out.write("Dry run: nothing written. Run again with --write to write these files.\n")
        return 0
    for output in outputs:
        output.path.parent.mkdir(parents=True, exist_ok=True)
        output.path.write_text(output.text, encoding="utf-8")
        out.write(f"wrote {output.path}\n")
    if stack is None:
        out.write("Next: review the files (`git diff`), replace each template's sample data with realistic values, "
                  "run `make test`, then `pulumi up` deploys them.\n")
        return 0
    out.write("Next: set the secrets above, review `git diff`, then `pulumi preview --stack "
              f"{stack}` (or `make plan STACK={stack}` offline).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

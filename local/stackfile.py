"""The local run's settings: stacks/Pulumi.local.yaml read as Pulumi would hand it to the program, checked
by infra's config model, and turned into the function's environment by infra's own function_environment.

Only what cannot be the same on one machine is replaced: the SMTP host and port (the local inbox's),
the CA to trust (the inbox's generated one) and the password (the inbox's generated one).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import yaml

from infra.config import MailerSettings, settings_problems
from infra.mailer import EVENT_TYPE, document_pattern, function_environment
from infra.sweep import topic_name
from infra.stack_files import PROJECT_FILE, REPO_ROOT, stack_config

LOCAL_STACK_FILE = REPO_ROOT / "stacks" / "Pulumi.local.yaml"

# The only variables the function process inherits from the developer's shell: what a process needs to
# run at all. Like the cloud's, its environment is otherwise exactly what the deployment sets, so a value
# exported in the shell (a stale SMTP_PASSWORD, a proxy) cannot change the local run.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")


class LocalStackError(ValueError):
    """The local stack file cannot be used. str(e) is one line naming the file and the key."""


def read_stack_config(stack_file: Path = LOCAL_STACK_FILE, project_file: Path = PROJECT_FILE) -> dict[str, str]:
    """The stack's config over the project's defaults, as strings, as the Pulumi CLI passes them."""
    try:
        return stack_config(stack_file, project_file)
    except (OSError, yaml.YAMLError) as error:
        raise LocalStackError(f"{stack_file}: cannot be read ({type(error).__name__})") from None


def load_local_settings(stack_file: Path = LOCAL_STACK_FILE, project_file: Path = PROJECT_FILE) -> MailerSettings:
    """The stack's plain settings, validated by the model `pulumi up` uses; the password key is ignored
    (the local run generates its own)."""
    settings, problems = settings_problems(read_stack_config(stack_file, project_file))
    if settings is None:
        raise LocalStackError(f"{stack_file.name}: {problems[0]}")
    return settings


def local_smtp_uri(stack_uri: str, *, host: str, port: int, ca_file: str) -> str:
    """The stack's SMTP URI pointed at the local inbox: same scheme, user and options, the inbox's host
    and port, and tlsCaFile set to the inbox's CA so the function verifies the certificate for real."""
    parts = urlsplit(stack_uri)
    if parts.scheme.lower() != "smtp":
        raise LocalStackError(
            "Pulumi.local.yaml: mailer:smtpConnectionUri must use smtp:// (the local inbox speaks STARTTLS)"
        )
    user = f"{parts.username}@" if parts.username else ""  # as written, still percent-encoded
    options = [(name, value) for name, value in parse_qsl(parts.query) if name != "tlsCaFile"]
    options.append(("tlsCaFile", ca_file))
    return urlunsplit(("smtp", f"{user}{host}:{port}", "", urlencode(options, quote_via=quote), ""))


def smtp_user(stack_uri: str) -> str:
    """The user name the function will log in with (the inbox accepts exactly this one)."""
    parts = urlsplit(stack_uri)
    if not parts.username:
        raise LocalStackError("Pulumi.local.yaml: mailer:smtpConnectionUri has no user; write it like smtp://mailer@host:587")
    return unquote(parts.username)


def function_process_environment(
    settings: MailerSettings, *, smtp_uri: str, smtp_password: str, emulator_host: str
) -> dict[str, str]:
    """The environment for the functions-framework process: the deployed function's variables (from
    infra.mailer.function_environment), the secret the cloud injects from Secret Manager, and the
    emulator's address."""
    deployed = {name: str(value) for name, value in function_environment(settings, smtp_uri).items()}
    inherited = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    return {
        **inherited,
        **deployed,
        "SMTP_PASSWORD": smtp_password,
        "FIRESTORE_EMULATOR_HOST": emulator_host,
        "PYTHONUNBUFFERED": "1",
    }


def sweep_process_environment(
    settings: MailerSettings, *, smtp_uri: str, smtp_password: str, emulator_host: str
) -> dict[str, str]:
    """The environment for the sweep's functions-framework process: as deployed, the sweep function gets
    the same variables as process_mail (function_environment carries the retry and sweep settings)."""
    return function_process_environment(
        settings, smtp_uri=smtp_uri, smtp_password=smtp_password, emulator_host=emulator_host
    )


def sweep_event_source(settings: MailerSettings) -> dict[str, str]:
    """Where the sweep's Pub/Sub events come from, as the deployed ones name it: the stack's project, the
    sweep topic (`<resourcePrefix>-sweep`) and a push subscription named as Eventarc names its own."""
    return {
        "project": settings.project,
        "topic": topic_name(settings.resource_prefix),
        "subscription": f"eventarc-{settings.region}-{settings.resource_prefix}-sweep-mail-sub-000",
    }


def trigger_filter(settings: MailerSettings) -> dict[str, str]:
    """The deployed trigger's event type and filters, as the local bridge takes them."""
    return {
        "event_type": EVENT_TYPE,
        "document": document_pattern(settings.mail_collection),
        "database": settings.database,
        "location": settings.firestore_location,
    }

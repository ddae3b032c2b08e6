"""The local run's settings come from stacks/Pulumi.local.yaml through infra's own config model and
function_environment, so what runs locally is what deploys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.config import MailerSettings
from infra.mailer import EVENT_TYPE, document_pattern, function_environment
from local.stackfile import (
    LOCAL_STACK_FILE,
    LocalStackError,
    function_process_environment,
    load_local_settings,
    local_smtp_uri,
    smtp_user,
    sweep_event_source,
    sweep_process_environment,
    trigger_filter,
)
from mailer.smtp_uri import parse_smtp_uri

INBOX_URI = "smtp://mailer@127.0.0.1:2525?tlsCaFile=%2Ftmp%2Fca.pem"


def write_stack(tmp_path: Path, **overrides: object) -> Path:
    config = yaml.safe_load(LOCAL_STACK_FILE.read_text())["config"]
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / "Pulumi.local.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def test_the_local_stack_is_validated_by_the_deployment_model() -> None:
    settings = load_local_settings()
    assert isinstance(settings, MailerSettings)
    declared = yaml.safe_load(LOCAL_STACK_FILE.read_text())["config"]
    assert settings.project == declared["gcp:project"]
    assert settings.mail_collection == declared["mailer:mailCollection"]
    assert settings.default_from == declared["mailer:defaultFrom"]
    # Keys the file leaves out take Pulumi.yaml's defaults, as under the Pulumi CLI.
    assert settings.database == "(default)" and settings.memory == "256Mi"


def test_the_function_gets_exactly_the_deployed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Values exported in a developer's shell must not change the local run.
    monkeypatch.setenv("USERS_COLLECTION", "users-from-my-shell")
    monkeypatch.setenv("SMTP_CONNECTION_URI", "smtp://someone@elsewhere.example.com:587")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.com:3128")
    settings = load_local_settings()
    environment = function_process_environment(
        settings, smtp_uri=INBOX_URI, smtp_password="generated-pw", emulator_host="127.0.0.1:8088"
    )
    deployed = function_environment(settings, INBOX_URI)
    assert {name: environment[name] for name in deployed} == deployed
    assert environment["SMTP_PASSWORD"] == "generated-pw"
    assert environment["FIRESTORE_EMULATOR_HOST"] == "127.0.0.1:8088"
    assert environment["SMTP_CONNECTION_URI"] == INBOX_URI
    # Nothing else from the shell but what a process needs to run (PATH and the like).
    assert "USERS_COLLECTION" not in environment  # the local stack does not set usersCollection
    assert "HTTPS_PROXY" not in environment
    assert environment["PATH"]


def test_retries_are_quick_enough_to_watch_and_reach_both_functions() -> None:
    # The local stack shortens the backoff (2 s, at most 10 s) so the demo's retry shows within seconds;
    # the values travel through infra's function_environment to process_mail and to sweep_mail alike.
    settings = load_local_settings()
    assert (settings.retry_backoff_seconds, settings.retry_backoff_max_seconds) == (2, 10)
    hosts = {"smtp_uri": INBOX_URI, "smtp_password": "generated-pw", "emulator_host": "127.0.0.1:8088"}
    process_env = function_process_environment(settings, **hosts)
    sweep_env = sweep_process_environment(settings, **hosts)
    assert sweep_env == process_env
    assert (sweep_env["RETRY_BACKOFF_SECONDS"], sweep_env["RETRY_BACKOFF_MAX_SECONDS"]) == ("2", "10")
    assert sweep_env["MAX_ATTEMPTS"] == str(settings.max_attempts)
    assert sweep_env["SWEEP_BUDGET_SECONDS"] == str(settings.sweep_timeout_seconds - 30)
    assert sweep_env["SWEEP_WORKERS"] == str(settings.sweep_workers)


def test_the_sweep_events_name_the_stacks_project_and_topic() -> None:
    settings = load_local_settings()
    assert sweep_event_source(settings) == {
        "project": "demo-mailer",
        "topic": f"{settings.resource_prefix}-sweep",
        "subscription": f"eventarc-{settings.region}-{settings.resource_prefix}-sweep-mail-sub-000",
    }


def test_the_smtp_uri_is_pointed_at_the_inbox_and_trusts_its_ca(tmp_path: Path) -> None:
    ca_file = tmp_path / "my demo" / "ca.pem"  # a space and a slash must survive the query string
    ca_file.parent.mkdir()
    ca_file.write_text("(the function only checks that the file exists when parsing)")
    stack_uri = "smtp://mailer%2Bdemo@smtp.example.com:587?name=client.example.com&tlsCaFile=%2Fold%2Fca.pem"
    uri = local_smtp_uri(stack_uri, host="127.0.0.1", port=40123, ca_file=str(ca_file))
    parsed = parse_smtp_uri(uri)  # the function's own parser
    assert (parsed.scheme, parsed.host, parsed.port) == ("smtp", "127.0.0.1", 40123)
    assert parsed.username == "mailer+demo"
    assert parsed.ehlo_name == "client.example.com"
    assert parsed.tls_ca_file == str(ca_file)
    assert parsed.password is None
    assert smtp_user(stack_uri) == "mailer+demo"


def test_the_local_trigger_is_the_deployed_trigger() -> None:
    settings = load_local_settings()
    assert trigger_filter(settings) == {
        "event_type": EVENT_TYPE,
        "document": document_pattern(settings.mail_collection),
        "database": settings.database,
        "location": settings.firestore_location,
    }


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"mailer:smtpConnectionUri": "smtp://mailer@smtp.example.com:25"}, "mailer:smtpConnectionUri uses port 25"),
        ({"mailer:defaultFrom": None}, "mailer:defaultFrom"),
        ({"mailer:ttlExpireType": "fortnight"}, "mailer:ttlExpireType is 'fortnight'"),
    ],
)
def test_a_bad_stack_file_fails_in_one_line_naming_the_key(tmp_path: Path, overrides: dict, expected: str) -> None:
    with pytest.raises(LocalStackError) as raised:
        load_local_settings(write_stack(tmp_path, **overrides))
    message = str(raised.value)
    assert message.startswith("Pulumi.local.yaml: ") and expected in message
    assert "\n" not in message


def test_an_implicit_tls_uri_is_refused_naming_the_key() -> None:
    with pytest.raises(LocalStackError, match="mailer:smtpConnectionUri must use smtp://"):
        local_smtp_uri("smtps://mailer@smtp.example.com:465", host="127.0.0.1", port=1, ca_file="/ca.pem")

"""EmailTrigger built directly (no __main__), for the variations the stack files do not cover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.config import MailerSettings
from infra.mailer import EmailTrigger, EmailTriggerArgs
from infra.source import collect_source
from tests.infra.conftest import BASE_SETTINGS, REPO_ROOT, TEST_PASSWORD, PulumiHarness, StackRun, is_secret, plain_occurrences

FUNCTION = "gcp:cloudfunctionsv2/function:Function"
BASE = BASE_SETTINGS


def build(harness: PulumiHarness, exports: dict[str, Any] | None = None, uri_is_secret: bool = False, **overrides: str) -> StackRun:
    settings = MailerSettings.model_validate({**BASE, **overrides})
    args = EmailTriggerArgs(
        settings=settings, smtp_password=TEST_PASSWORD, source=collect_source(REPO_ROOT / "functions"), smtp_uri_is_secret=uri_is_secret
    )

    def program() -> None:
        component = EmailTrigger("unit", args)
        if exports is not None:
            names = ["function_name", "function_uri", "trigger_name", "secret_id", "runtime_service_account", "trigger_service_account",
                     "sweep_function_name", "sweep_topic", "sweep_schedule"]
            pulumi.Output.all(*(getattr(component, n) for n in names)).apply(lambda values: exports.update(zip(names, values)))

    return harness.run(program)


def environment(run: StackRun) -> dict[str, Any]:
    return run.function("process_mail").inputs["serviceConfig"]["environmentVariables"]


def test_unset_optional_settings_are_left_out_of_the_environment(pulumi_mocks: PulumiHarness) -> None:
    env = environment(build(pulumi_mocks))
    assert set(env) == {
        "SMTP_CONNECTION_URI", "SMTP_PROVIDER", "DEFAULT_FROM", "MAIL_COLLECTION", "TTL_EXPIRE_TYPE", "TTL_EXPIRE_VALUE",
        "DATABASE", "GOOGLE_CLOUD_PROJECT", "MAX_MESSAGE_BYTES", "LEASE_SECONDS",
        "MAX_ATTEMPTS", "RETRY_BACKOFF_SECONDS", "RETRY_BACKOFF_MAX_SECONDS", "DELIVERY_GUARANTEE",
        "SWEEP_WORKERS", "SWEEP_BUDGET_SECONDS",
    }
    assert "" not in env.values()


def test_set_optional_settings_reach_the_environment(pulumi_mocks: PulumiHarness) -> None:
    env = environment(build(pulumi_mocks, **{"mailer:defaultReplyTo": "help@acme.example", "mailer:usersCollection": "people", "mailer:templatesCollection": "tpl"}))
    assert (env["DEFAULT_REPLY_TO"], env["USERS_COLLECTION"], env["TEMPLATES_COLLECTION"]) == ("help@acme.example", "people", "tpl")


def test_no_ttl_policy_when_ttl_is_never(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks)
    assert run.of_type("gcp:firestore/field:Field") == []
    assert environment(run)["TTL_EXPIRE_TYPE"] == "never"


def test_a_subcollection_in_a_named_database(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks, **{"mailer:mailCollection": "tenants/acme/mail", "mailer:database": "mail-db", "mailer:ttlExpireType": "day", "mailer:ttlExpireValue": "2"})
    trigger = run.function("process_mail").inputs["eventTrigger"]
    assert trigger["eventFilters"] == [
        {"attribute": "database", "value": "mail-db"},
        {"attribute": "document", "value": "tenants/acme/mail/{docId}", "operator": "match-path-pattern"},
    ]
    assert trigger["triggerRegion"] == "europe-west3"
    ttl = run.one("gcp:firestore/field:Field").inputs
    # TTL policies apply per collection group: the last segment of the path.
    assert (ttl["collection"], ttl["database"], ttl["field"]) == ("mail", "mail-db", "delivery.expireAt")
    env = environment(run)
    assert (env["DATABASE"], env["MAIL_COLLECTION"], env["TTL_EXPIRE_TYPE"], env["TTL_EXPIRE_VALUE"]) == ("mail-db", "tenants/acme/mail", "day", "2")


def test_a_uri_carrying_a_password_is_kept_secret(pulumi_mocks: PulumiHarness) -> None:
    uri = "smtp://mailer:Uri-Pa55-zz9@relay.acme.test:587"
    run = build(pulumi_mocks, uri_is_secret=True, **{"mailer:smtpConnectionUri": uri, "mailer:allowPasswordInUri": "true"})
    function = run.function("process_mail")
    assert is_secret(function.raw["serviceConfig"]["environmentVariables"]["SMTP_CONNECTION_URI"])
    assert {r.name: plain_occurrences(r.raw, "Uri-Pa55-zz9") for r in run.registrations if plain_occurrences(r.raw, "Uri-Pa55-zz9")} == {}


def test_a_plain_uri_stays_readable(pulumi_mocks: PulumiHarness) -> None:
    function = build(pulumi_mocks).function("process_mail")
    assert function.raw["serviceConfig"]["environmentVariables"]["SMTP_CONNECTION_URI"] == BASE["mailer:smtpConnectionUri"]


def test_the_password_is_secret_even_when_passed_plain(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks)
    assert is_secret(run.one("gcp:secretmanager/secretVersion:SecretVersion").raw["secretData"])
    assert [r.name for r in run.registrations if plain_occurrences(r.raw, TEST_PASSWORD)] == []


def test_resource_prefix_names_function_secret_and_accounts(pulumi_mocks: PulumiHarness) -> None:
    exports: dict[str, Any] = {}
    run = build(pulumi_mocks, exports, **{"mailer:resourcePrefix": "mail-eu"})
    assert {r.inputs["accountId"] for r in run.of_type("gcp:serviceaccount/account:Account")} == {"mail-eu-runtime", "mail-eu-trigger"}
    assert exports == {
        "function_name": "mail-eu-send-mail",
        "function_uri": "https://europe-west3-acme-mailer-unit.cloudfunctions.net/mail-eu-send-mail",
        "trigger_name": "projects/acme-mailer-unit/locations/europe-west3/triggers/mail-eu-send-mail-552211",
        "secret_id": "mail-eu-smtp-password",
        "runtime_service_account": "mail-eu-runtime@acme-mailer-unit.iam.gserviceaccount.com",
        "trigger_service_account": "mail-eu-trigger@acme-mailer-unit.iam.gserviceaccount.com",
        "sweep_function_name": "mail-eu-sweep-mail",
        "sweep_topic": "projects/acme-mailer-unit/topics/mail-eu-sweep",
        "sweep_schedule": "* * * * *",
    }


@pytest.mark.parametrize("field_name", ["min_instances", "max_instances", "concurrency", "memory", "cpu", "timeout_seconds", "runtime"])
def test_scaling_settings_reach_the_function(pulumi_mocks: PulumiHarness, field_name: str) -> None:
    overrides = {"mailer:minInstances": "2", "mailer:maxInstances": "7", "mailer:concurrency": "12", "mailer:memory": "2Gi",
                 "mailer:cpu": "2", "mailer:timeoutSeconds": "300", "mailer:runtime": "python313"}
    settings = MailerSettings.model_validate({**BASE, **overrides})
    function = build(pulumi_mocks, **overrides).function("process_mail").inputs
    wire = {
        "min_instances": function["serviceConfig"]["minInstanceCount"],
        "max_instances": function["serviceConfig"]["maxInstanceCount"],
        "concurrency": function["serviceConfig"]["maxInstanceRequestConcurrency"],
        "memory": function["serviceConfig"]["availableMemory"],
        "cpu": function["serviceConfig"]["availableCpu"],
        "timeout_seconds": function["serviceConfig"]["timeoutSeconds"],
        "runtime": function["buildConfig"]["runtime"],
    }
    assert wire[field_name] == getattr(settings, field_name)
    assert getattr(settings, field_name) != MailerSettings.model_fields[field_name].default


def test_source_object_name_follows_the_tree(pulumi_mocks: PulumiHarness, tmp_path: Path) -> None:
    import shutil

    tree = tmp_path / "functions"
    shutil.copytree(REPO_ROOT / "functions", tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    settings = MailerSettings.model_validate(BASE)

    def object_name() -> str:
        args = EmailTriggerArgs(settings=settings, smtp_password=TEST_PASSWORD, source=collect_source(tree))
        run = pulumi_mocks.run(lambda: EmailTrigger("unit", args))
        name = run.one("gcp:storage/bucketObject:BucketObject").inputs["name"]
        assert run.function("process_mail").inputs["buildConfig"]["source"]["storageSource"]["object"] == name
        pulumi_mocks.install("test", {}, [])
        return name

    first = object_name()
    assert object_name() == first
    (tree / "main.py").write_text((tree / "main.py").read_text() + "\n# new revision\n")
    assert object_name() != first

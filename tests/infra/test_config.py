"""infra/config.py: every bad setting fails with one line that names the key and says how to fix it."""

from __future__ import annotations

from typing import Optional

import pulumi
import pytest

from infra.config import ConfigError, StackConfig, load_config
from tests.infra.conftest import TEST_PASSWORD, PulumiHarness

VALID = {
    "gcp:project": "acme-mailer-test",
    "mailer:region": "us-central1",
    "mailer:firestoreLocation": "nam5",
    "mailer:smtpConnectionUri": "smtp://mailer@smtp.example.com:587",
    "mailer:defaultFrom": "Acme <noreply@acme.example>",
    "mailer:smtpPassword": TEST_PASSWORD,
}
SECRET_KEYS = ["mailer:smtpPassword"]


def load(harness: PulumiHarness, overrides: dict[str, Optional[str]], secret_keys: list[str] = SECRET_KEYS) -> StackConfig:
    config = {**VALID, **overrides}
    harness.install("test", {key: value for key, value in config.items() if value is not None}, secret_keys)
    return load_config(pulumi.Config("mailer"), pulumi.Config("gcp"))


def config_error(harness: PulumiHarness, overrides: dict[str, Optional[str]], secret_keys: list[str] = SECRET_KEYS) -> str:
    with pytest.raises(ConfigError) as raised:
        load(harness, overrides, secret_keys)
    message = str(raised.value)
    assert "\n" not in message, message
    assert "Traceback" not in message
    return message


def test_a_minimal_config_loads_with_the_documented_defaults(pulumi_mocks: PulumiHarness) -> None:
    settings = load(pulumi_mocks, {}).settings
    assert settings.project == "acme-mailer-test"
    assert (settings.region, settings.firestore_location) == ("us-central1", "nam5")
    assert (settings.database, settings.mail_collection) == ("(default)", "mail")
    assert settings.users_collection is None and settings.templates_collection is None and settings.default_reply_to is None
    assert (settings.ttl_expire_type, settings.ttl_expire_value, settings.ttl_enabled) == ("never", 1, False)
    assert (settings.min_instances, settings.max_instances, settings.concurrency) == (0, 10, 1)
    assert (settings.memory, settings.cpu, settings.timeout_seconds, settings.runtime) == ("256Mi", "0.167", 60, "python312")
    assert (settings.max_attempts, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds) == (5, 60, 3600)
    assert settings.delivery_guarantee == "at-least-once"
    assert (settings.sweep_schedule, settings.sweep_timeout_seconds, settings.sweep_workers) == ("* * * * *", 300, 4)
    assert settings.sweep_budget_seconds == 270


def test_values_arrive_as_strings_and_are_typed(pulumi_mocks: PulumiHarness) -> None:
    settings = load(
        pulumi_mocks,
        {"mailer:maxInstances": "25", "mailer:concurrency": "4", "mailer:cpu": "1", "mailer:allowPasswordInUri": "true",
         "mailer:ttlExpireType": "day", "mailer:ttlExpireValue": "3", "mailer:usersCollection": "users"},
    ).settings
    assert (settings.max_instances, settings.concurrency, settings.allow_password_in_uri) == (25, 4, True)
    assert (settings.ttl_enabled, settings.ttl_expire_value, settings.users_collection) == (True, 3, "users")


def test_empty_optional_values_count_as_unset(pulumi_mocks: PulumiHarness) -> None:
    settings = load(pulumi_mocks, {"mailer:defaultReplyTo": "", "mailer:usersCollection": "  "}).settings
    assert settings.default_reply_to is None and settings.users_collection is None


def test_display_names_are_allowed_in_addresses(pulumi_mocks: PulumiHarness) -> None:
    settings = load(pulumi_mocks, {"mailer:defaultFrom": '"Acme, Inc." <noreply@acme.example>', "mailer:defaultReplyTo": "Support <help@acme.example>"}).settings
    assert settings.default_from == '"Acme, Inc." <noreply@acme.example>'


def test_the_password_is_read_as_a_secret_output(pulumi_mocks: PulumiHarness) -> None:
    seen: dict[str, object] = {}

    @pulumi.runtime.test
    def check() -> pulumi.Output:
        password = load(pulumi_mocks, {}).smtp_password
        return pulumi.Output.all(pulumi.Output.from_input(password.is_secret()), password).apply(lambda v: seen.update(secret=v[0], value=v[1]))

    check()
    assert seen == {"secret": True, "value": TEST_PASSWORD}


def test_a_uri_set_as_secret_stays_secret(pulumi_mocks: PulumiHarness) -> None:
    assert load(pulumi_mocks, {}).smtp_uri_is_secret is False
    assert load(pulumi_mocks, {}, SECRET_KEYS + ["mailer:smtpConnectionUri"]).smtp_uri_is_secret is True


INVALID = [
    # (overrides, keys the message must name, fragment of the explanation or fix)
    ({"mailer:smtpConnectionUri": "http://smtp.example.com:587"}, ["mailer:smtpConnectionUri"], "smtp:// (STARTTLS"),
    ({"mailer:smtpConnectionUri": "smtp.example.com:587"}, ["mailer:smtpConnectionUri"], "must start with smtp://"),
    ({"mailer:smtpConnectionUri": "smtp://:587"}, ["mailer:smtpConnectionUri"], "has no host"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@smtp.example.com"}, ["mailer:smtpConnectionUri"], "has no port; add :587"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@smtp.example.com:http"}, ["mailer:smtpConnectionUri"], "port that is not a number"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@smtp.example.com:25"}, ["mailer:smtpConnectionUri"], "port 25, which Google Cloud blocks"),
    ({"mailer:smtpConnectionUri": "smtps://mailer@smtp.example.com:25"}, ["mailer:smtpConnectionUri"], "use 587 with smtp://"),
    ({"mailer:smtpConnectionUri": "smtp://mailer@smtp.example.com:465"}, ["mailer:smtpConnectionUri"], "use smtps:// for 465"),
    ({"mailer:smtpConnectionUri": "smtps://mailer@smtp.example.com:587"}, ["mailer:smtpConnectionUri"], "use smtp:// for 587"),
    ({"mailer:smtpConnectionUri": None}, ["mailer:smtpConnectionUri"], "is not set; run `pulumi config set mailer:smtpConnectionUri"),
    ({"mailer:defaultFrom": "noreply"}, ["mailer:defaultFrom"], "not a valid email address"),
    ({"mailer:defaultFrom": "Acme <noreply@>"}, ["mailer:defaultFrom"], "not a valid email address"),
    ({"mailer:defaultFrom": None}, ["mailer:defaultFrom"], "is not set"),
    ({"mailer:defaultReplyTo": "help@@acme.example"}, ["mailer:defaultReplyTo"], "not a valid email address"),
    ({"mailer:mailCollection": "mail/doc1"}, ["mailer:mailCollection"], "odd number of segments"),
    ({"mailer:mailCollection": "tenants//mail"}, ["mailer:mailCollection"], "empty path segment"),
    ({"mailer:mailCollection": "/mail"}, ["mailer:mailCollection"], "empty path segment"),
    ({"mailer:mailCollection": "__mail__"}, ["mailer:mailCollection"], "reserved id '__mail__'"),
    ({"mailer:mailCollection": "tenants/{tenant}/mail"}, ["mailer:mailCollection"], "wildcard"),
    ({"mailer:usersCollection": "users/ada"}, ["mailer:usersCollection"], "odd number of segments"),
    ({"mailer:templatesCollection": "__t__"}, ["mailer:templatesCollection"], "reserved id"),
    ({"mailer:firestoreLocation": "us-central"}, ["mailer:firestoreLocation"], "not a Firestore location"),
    ({"mailer:firestoreLocation": None}, ["mailer:firestoreLocation"], "is not set"),
    ({"mailer:region": "nam5"}, ["mailer:region", "mailer:firestoreLocation"], "Firestore multi-region"),
    ({"mailer:region": "mars-north1"}, ["mailer:region"], "not a Cloud Functions (2nd gen) region"),
    ({"mailer:region": None}, ["mailer:region"], "is not set"),
    ({"mailer:database": "Mail_DB"}, ["mailer:database"], "not a Firestore database id"),
    ({"mailer:ttlExpireType": "fortnight"}, ["mailer:ttlExpireType"], "never, hour, day, week, month, year"),
    ({"mailer:ttlExpireValue": "0"}, ["mailer:ttlExpireValue"], "positive whole number"),
    ({"mailer:ttlExpireValue": "two"}, ["mailer:ttlExpireValue"], "valid integer"),
    ({"mailer:maxMessageBytes": "100"}, ["mailer:maxMessageBytes"], "between 1024 and"),
    ({"mailer:runtime": "python311"}, ["mailer:runtime"], "python312 or newer"),
    ({"mailer:runtime": "nodejs22"}, ["mailer:runtime"], "python312 or newer"),
    ({"mailer:minInstances": "-1"}, ["mailer:minInstances"], "between 0 and"),
    ({"mailer:maxInstances": "0"}, ["mailer:maxInstances"], "between 1 and"),
    ({"mailer:minInstances": "5", "mailer:maxInstances": "2"}, ["mailer:minInstances", "mailer:maxInstances"], "is greater than"),
    ({"mailer:concurrency": "0"}, ["mailer:concurrency"], "between 1 and"),
    ({"mailer:concurrency": "8", "mailer:cpu": "0.5"}, ["mailer:concurrency", "mailer:cpu"], "needs at least 1 vCPU"),
    ({"mailer:memory": "256MB"}, ["mailer:memory"], "unit k, M, G, Mi or Gi"),
    ({"mailer:memory": "64Mi"}, ["mailer:memory"], "128Mi to 32Gi"),
    ({"mailer:memory": "64Gi", "mailer:cpu": "8"}, ["mailer:memory"], "128Mi to 32Gi"),
    ({"mailer:memory": "2Gi", "mailer:cpu": "0.5"}, ["mailer:memory", "mailer:cpu"], "needs at least 1 vCPU"),
    ({"mailer:memory": "1Gi", "mailer:cpu": "4"}, ["mailer:cpu", "mailer:memory"], "needs at least 2Gi of memory"),
    ({"mailer:cpu": "3"}, ["mailer:cpu"], "or 1, 2, 4, 6 or 8"),
    ({"mailer:cpu": "0.01"}, ["mailer:cpu"], "from 0.08"),
    ({"mailer:cpu": "lots"}, ["mailer:cpu"], "number of vCPUs"),
    ({"mailer:timeoutSeconds": "541"}, ["mailer:timeoutSeconds"], "between 1 and 540"),
    ({"mailer:timeoutSeconds": "0"}, ["mailer:timeoutSeconds"], "between 1 and 540"),
    ({"mailer:allowPasswordInUri": "maybe"}, ["mailer:allowPasswordInUri"], "valid boolean"),
    ({"mailer:resourcePrefix": "Mailer!"}, ["mailer:resourcePrefix"], "lowercase letters"),
    ({"mailer:maxAttempts": "0"}, ["mailer:maxAttempts"], "between 1 and 100"),
    ({"mailer:maxAttempts": "101"}, ["mailer:maxAttempts"], "between 1 and 100"),
    ({"mailer:maxAttempts": "five"}, ["mailer:maxAttempts"], "valid integer"),
    ({"mailer:retryBackoffSeconds": "0"}, ["mailer:retryBackoffSeconds"], "between 1 and 86400"),
    ({"mailer:retryBackoffSeconds": "86401", "mailer:retryBackoffMaxSeconds": "86400"}, ["mailer:retryBackoffSeconds"], "between 1 and 86400"),
    ({"mailer:retryBackoffMaxSeconds": "86401"}, ["mailer:retryBackoffMaxSeconds"], "between 1 and 86400"),
    ({"mailer:retryBackoffMaxSeconds": "1.5"}, ["mailer:retryBackoffMaxSeconds"], "valid integer"),
    ({"mailer:retryBackoffSeconds": "600", "mailer:retryBackoffMaxSeconds": "300"},
     ["mailer:retryBackoffMaxSeconds", "mailer:retryBackoffSeconds"], "cannot be shorter than the first"),
    # Only the base is raised: the default cap (3600) is now below it.
    ({"mailer:retryBackoffSeconds": "7200"}, ["mailer:retryBackoffMaxSeconds", "mailer:retryBackoffSeconds"], "is 3600 but"),
    ({"mailer:deliveryGuarantee": "exactly-once"}, ["mailer:deliveryGuarantee"], "use at-least-once"),
    ({"mailer:deliveryGuarantee": "AT-MOST-ONCE"}, ["mailer:deliveryGuarantee"], "or at-most-once"),
    ({"mailer:sweepSchedule": "* * * *"}, ["mailer:sweepSchedule"], "has 4 field(s); write 5 fields"),
    ({"mailer:sweepSchedule": "0 0 * * * *"}, ["mailer:sweepSchedule"], "has 6 field(s)"),
    ({"mailer:sweepSchedule": "every 1 minutes"}, ["mailer:sweepSchedule"], "write 5 fields"),
    ({"mailer:sweepSchedule": "60 * * * *"}, ["mailer:sweepSchedule"], "minute field '60'"),
    ({"mailer:sweepSchedule": "*/0 * * * *"}, ["mailer:sweepSchedule"], "minute field '*/0'"),
    ({"mailer:sweepSchedule": "* 24 * * *"}, ["mailer:sweepSchedule"], "hour field '24'"),
    ({"mailer:sweepSchedule": "* * 0 * *"}, ["mailer:sweepSchedule"], "day-of-month field '0'"),
    ({"mailer:sweepSchedule": "* * * 13 *"}, ["mailer:sweepSchedule"], "month field '13'"),
    ({"mailer:sweepSchedule": "* * * * FUN"}, ["mailer:sweepSchedule"], "day-of-week field 'FUN'"),
    ({"mailer:sweepSchedule": "30-10 * * * *"}, ["mailer:sweepSchedule"], "minute field '30-10'"),
    ({"mailer:sweepTimeoutSeconds": "59"}, ["mailer:sweepTimeoutSeconds"], "between 60 and 540"),
    ({"mailer:sweepTimeoutSeconds": "541"}, ["mailer:sweepTimeoutSeconds"], "between 60 and 540"),
    ({"mailer:sweepWorkers": "0"}, ["mailer:sweepWorkers"], "between 1 and 32"),
    ({"mailer:sweepWorkers": "33"}, ["mailer:sweepWorkers"], "between 1 and 32"),
    ({"gcp:project": None}, ["gcp:project"], "is not set; run `pulumi config set gcp:project"),
    ({"gcp:project": "My Project"}, ["gcp:project"], "not a Google Cloud project id"),
    ({"mailer:smtpPassword": None}, ["mailer:smtpPassword"], "pulumi config set --secret mailer:smtpPassword"),
    ({"mailer:smtpPassword": ""}, ["mailer:smtpPassword"], "is not set"),
]


@pytest.mark.parametrize(("overrides", "keys", "fragment"), INVALID, ids=[f"{'+'.join(k)}={list(o.values())}" for o, k, _ in INVALID])
def test_each_invalid_setting_is_refused_naming_its_key(
    pulumi_mocks: PulumiHarness, overrides: dict[str, Optional[str]], keys: list[str], fragment: str
) -> None:
    message = config_error(pulumi_mocks, overrides)
    assert message.startswith(keys[0]), message
    for key in keys:
        assert key in message, message
    assert fragment in message, message
    assert TEST_PASSWORD not in message


def test_config_error_is_a_run_error_and_a_value_error(pulumi_mocks: PulumiHarness) -> None:
    with pytest.raises(ConfigError) as raised:
        load(pulumi_mocks, {"mailer:region": "mars-north1"})
    assert isinstance(raised.value, pulumi.RunError) and isinstance(raised.value, ValueError)


def test_all_problems_are_reported_together_on_one_line(pulumi_mocks: PulumiHarness) -> None:
    message = config_error(pulumi_mocks, {"mailer:region": None, "mailer:cpu": "3", "mailer:smtpPassword": None})
    for key in ("mailer:region", "mailer:cpu", "mailer:smtpPassword"):
        assert key in message


def test_a_password_in_the_uri_is_refused_without_echoing_it(pulumi_mocks: PulumiHarness) -> None:
    uri_password = "Uri-Pa55-zz9"
    message = config_error(pulumi_mocks, {"mailer:smtpConnectionUri": f"smtp://mailer:{uri_password}@smtp.example.com:587"})
    assert message.startswith("mailer:smtpConnectionUri contains a password")
    assert "pulumi config set --secret mailer:smtpPassword" in message and "mailer:allowPasswordInUri" in message
    assert uri_password not in message


def test_uri_errors_never_echo_the_uri(pulumi_mocks: PulumiHarness) -> None:
    uri_password = "Uri-Pa55-zz9"
    for uri in (f"smtp://mailer:{uri_password}@relay.acme.test:25", f"smtp://mailer:{uri_password}@relay.acme.test",
                f"http://mailer:{uri_password}@relay.acme.test:587", f"smtp://mailer:{uri_password}@relay.acme.test:x"):
        message = config_error(pulumi_mocks, {"mailer:smtpConnectionUri": uri})
        assert uri_password not in message and "relay.acme.test" not in message, message


def test_a_password_in_the_uri_is_accepted_with_the_opt_in(pulumi_mocks: PulumiHarness) -> None:
    loaded = load(pulumi_mocks, {"mailer:smtpConnectionUri": "smtp://mailer:Uri-Pa55@smtp.example.com:587", "mailer:allowPasswordInUri": "true"})
    assert loaded.settings.has_password_in_uri and loaded.smtp_uri_is_secret
    assert "Uri-Pa55" not in repr(loaded.settings)


def test_a_password_stored_in_plain_text_is_refused(pulumi_mocks: PulumiHarness) -> None:
    message = config_error(pulumi_mocks, {}, secret_keys=[])
    assert message == (
        "mailer:smtpPassword is stored in plain text in the stack file; run `pulumi config rm mailer:smtpPassword` "
        "and then `pulumi config set --secret mailer:smtpPassword`"
    )


@pytest.mark.parametrize("location", ["nam5", "nam7", "eur3", "us-east1", "europe-west3", "asia-northeast1"])
def test_known_firestore_locations_are_accepted(pulumi_mocks: PulumiHarness, location: str) -> None:
    assert load(pulumi_mocks, {"mailer:firestoreLocation": location}).settings.firestore_location == location


@pytest.mark.parametrize(("memory", "cpu", "concurrency"), [("128Mi", "0.083", "1"), ("1Gi", "0.583", "1"), ("512Mi", "1", "80"), ("4Gi", "2", "16"), ("32Gi", "8", "1000")])
def test_sane_scaling_combinations_are_accepted(pulumi_mocks: PulumiHarness, memory: str, cpu: str, concurrency: str) -> None:
    settings = load(pulumi_mocks, {"mailer:memory": memory, "mailer:cpu": cpu, "mailer:concurrency": concurrency}).settings
    assert (settings.memory, settings.cpu, settings.concurrency) == (memory, cpu, int(concurrency))


@pytest.mark.parametrize(
    "schedule", ["* * * * *", "*/5 * * * *", "0 */2 * * *", "0,15,30,45 8-18 * * MON-FRI", "5/10 * 1-15 jan,Jul 0", "0 0 * * 7"]
)
def test_cron_schedules_cloud_scheduler_takes_are_accepted(pulumi_mocks: PulumiHarness, schedule: str) -> None:
    assert load(pulumi_mocks, {"mailer:sweepSchedule": schedule}).settings.sweep_schedule == schedule


def test_retry_and_sweep_settings_arrive_as_strings_and_are_typed(pulumi_mocks: PulumiHarness) -> None:
    settings = load(
        pulumi_mocks,
        {"mailer:maxAttempts": "1", "mailer:retryBackoffSeconds": "86400", "mailer:retryBackoffMaxSeconds": "86400",
         "mailer:deliveryGuarantee": "at-most-once", "mailer:sweepSchedule": "*/2 * * * *",
         "mailer:sweepTimeoutSeconds": "60", "mailer:sweepWorkers": "32"},
    ).settings
    assert (settings.max_attempts, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds) == (1, 86400, 86400)
    assert (settings.delivery_guarantee, settings.sweep_schedule) == ("at-most-once", "*/2 * * * *")
    # The shortest sweep timeout still leaves the sweep 30 s to work in.
    assert (settings.sweep_timeout_seconds, settings.sweep_budget_seconds, settings.sweep_workers) == (60, 30, 32)

"""__main__.py run under Pulumi mocks against every stack file in stacks/ (plus a test password)."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from infra.apis import REQUIRED_APIS
from infra.config import ConfigError, MailerSettings
from infra.source import collect_source
from tests.infra.conftest import (
    PROJECT_FILE,
    PROJECT_NUMBER,
    REPO_ROOT,
    STACK_FILES,
    TEST_PASSWORD,
    PulumiHarness,
    StackRun,
    is_secret,
    plain_occurrences,
    stack_config,
    stack_name,
)

FUNCTION = "gcp:cloudfunctionsv2/function:Function"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
SECRET_MEMBER = "gcp:secretmanager/secretIamMember:SecretIamMember"
SERVICE_MEMBER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
ACCOUNT_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
EVENTARC_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-eventarc.iam.gserviceaccount.com"
SCHEDULER_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"


def settings_for(stack_file: Path) -> MailerSettings:
    values = {key: value for key, value in stack_config(stack_file).items() if value != ""}
    return MailerSettings.model_validate(values)


def accounts(run: StackRun, settings: MailerSettings) -> tuple[str, str]:
    """The (runtime, trigger) members, as the mocked provider computed the emails."""
    domain = f"{settings.project}.iam.gserviceaccount.com"
    prefix = settings.resource_prefix
    return f"serviceAccount:{prefix}-runtime@{domain}", f"serviceAccount:{prefix}-trigger@{domain}"


def test_there_are_dev_and_prod_stacks() -> None:
    assert {"dev", "prod"} <= {stack_name(path) for path in STACK_FILES}


def test_stack_files_use_only_declared_keys_and_hold_no_secret(stack_file: Path) -> None:
    declared = {f"mailer:{key}" for key in yaml.safe_load(PROJECT_FILE.read_text())["config"]}
    values = yaml.safe_load(stack_file.read_text())["config"]
    assert "gcp:project" in values
    undeclared = {key for key in values if key.startswith("mailer:") and key not in declared}
    assert undeclared == set()
    assert "mailer:smtpPassword" not in values
    assert "secure:" not in stack_file.read_text()


def test_project_file_declares_exactly_the_settings_the_program_reads() -> None:
    declared = yaml.safe_load(PROJECT_FILE.read_text())["config"]
    model_keys = {field.alias for field in MailerSettings.model_fields.values() if field.alias.startswith("mailer:")}
    assert {f"mailer:{key}" for key in declared} == model_keys
    # The secrets are not declared: which ones are required depends on mailer:smtpAuthMethod, and Pulumi
    # itself would require a declared key without a default. The program checks them (test_config.py).
    assert not {"smtpPassword", "oauth2ClientSecret", "oauth2RefreshToken"} & set(declared)
    for key, spec in declared.items():
        assert spec["type"] in ("string", "integer", "boolean", "array") and spec["description"], key  # array: mailer:events


def test_project_defaults_match_the_model_defaults() -> None:
    declared = yaml.safe_load(PROJECT_FILE.read_text())["config"]
    for field_name, field in MailerSettings.model_fields.items():
        name = field.alias.removeprefix("mailer:")
        if field.is_required():
            assert "default" not in declared.get(name, {}), name
            continue
        yaml_default = declared[name]["default"]
        expected = None if yaml_default == "" else yaml_default
        assert field.default == expected, field_name


def test_program_exports_the_outputs(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    prefix, project, region = settings.resource_prefix, settings.project, settings.region
    assert stack_run.exports == {
        "function_name": f"{prefix}-send-mail",
        "function_uri": f"https://{region}-{project}.cloudfunctions.net/{prefix}-send-mail",
        "trigger_name": f"projects/{project}/locations/{settings.firestore_location}/triggers/{prefix}-send-mail-552211",
        "secret_id": f"{prefix}-smtp-password",
        "runtime_service_account": f"{prefix}-runtime@{project}.iam.gserviceaccount.com",
        "trigger_service_account": f"{prefix}-trigger@{project}.iam.gserviceaccount.com",
        "sweep_function_name": f"{prefix}-sweep-mail",
        "sweep_topic": f"projects/{project}/topics/{prefix}-sweep",
        "sweep_schedule": settings.sweep_schedule,
        "mail_collection": settings.mail_collection,
        "database": settings.database,
    }


def test_required_apis_are_enabled_and_left_on_at_destroy(stack_run: StackRun, stack_file: Path) -> None:
    services = stack_run.of_type("gcp:projects/service:Service")
    assert {s.inputs["service"] for s in services} >= {
        f"{api}.googleapis.com"
        for api in ("cloudfunctions", "run", "eventarc", "cloudbuild", "artifactregistry", "secretmanager", "firestore", "pubsub",
                    "cloudscheduler")
    }
    assert len(services) == len(REQUIRED_APIS)
    for service in services:
        assert service.inputs["disableOnDestroy"] is False
        assert service.inputs["project"] == settings_for(stack_file).project


def test_iam_grants_are_exactly_the_least_privilege_set(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    runtime, trigger = accounts(stack_run, settings)

    project_grants = {(r.inputs["project"], r.inputs["role"], r.inputs["member"]) for r in stack_run.of_type(PROJECT_MEMBER)}
    assert project_grants == {
        (settings.project, "roles/datastore.user", runtime),
        (settings.project, "roles/eventarc.eventReceiver", trigger),
        (settings.project, "roles/eventarc.serviceAgent", EVENTARC_AGENT),
    }

    secret = stack_run.one("gcp:secretmanager/secret:Secret")
    secret_grant = stack_run.one(SECRET_MEMBER)
    assert (secret_grant.inputs["role"], secret_grant.inputs["member"]) == ("roles/secretmanager.secretAccessor", runtime)
    assert secret_grant.inputs["secretId"] == secret.inputs["secretId"]

    # run.invoker for the trigger account on each function's own Cloud Run service, nothing wider.
    services = f"projects/{settings.project}/locations/{settings.region}/services"
    invokers = {(r.inputs["role"], r.inputs["member"], r.inputs["location"], r.inputs["name"]) for r in stack_run.of_type(SERVICE_MEMBER)}
    assert invokers == {
        ("roles/run.invoker", trigger, settings.region, f"{services}/{stack_run.function(entry_point).inputs['name']}")
        for entry_point in ("process_mail", "sweep_mail")
    }

    # Cloud Scheduler's service agent may publish to the sweep topic and nowhere else.
    topic = stack_run.one("gcp:pubsub/topic:Topic")
    publisher = stack_run.one(TOPIC_MEMBER).inputs
    assert (publisher["role"], publisher["member"], publisher["topic"], publisher["project"]) == (
        "roles/pubsub.publisher", SCHEDULER_AGENT, topic.inputs["name"], settings.project
    )

    # Pub/Sub may mint the trigger account's push tokens (both triggers push through Pub/Sub), on that
    # one account only: projects from before April 2021 lack it.
    token = stack_run.one(ACCOUNT_MEMBER).inputs
    domain = f"{settings.project}.iam.gserviceaccount.com"
    assert (token["role"], token["member"], token["serviceAccountId"]) == (
        "roles/iam.serviceAccountTokenCreator", PUBSUB_AGENT, f"projects/{settings.project}/serviceAccounts/{settings.resource_prefix}-trigger@{domain}"
    )


def test_no_authoritative_or_broad_iam_anywhere(stack_run: StackRun) -> None:
    iam_types = {r.type for r in stack_run.registrations if "iam" in r.type.lower() and r.type != "gcp:serviceaccount/account:Account"}
    assert iam_types == {PROJECT_MEMBER, SECRET_MEMBER, SERVICE_MEMBER, TOPIC_MEMBER, ACCOUNT_MEMBER}
    roles = [r.inputs.get("role") for r in stack_run.registrations if "role" in r.inputs]
    assert not {"roles/owner", "roles/editor", "roles/viewer"} & set(roles)
    # 3 project-wide (none new for the sweep), 1 on the secret, 1 invoker per function, 1 on the sweep
    # topic, 1 on the trigger account.
    assert len(roles) == 8


def test_password_is_secret_in_state_and_plain_nowhere(stack_run: StackRun) -> None:
    version = stack_run.one("gcp:secretmanager/secretVersion:SecretVersion")
    assert is_secret(version.raw["secretData"])
    assert version.raw["secretData"]["value"] == TEST_PASSWORD
    leaks = {r.name: plain_occurrences(r.raw, TEST_PASSWORD) for r in stack_run.registrations}
    assert {name: paths for name, paths in leaks.items() if paths} == {}
    assert plain_occurrences(stack_run.exports, TEST_PASSWORD) == []


def test_trigger_fires_once_per_created_document_in_the_database_location(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    _, trigger = accounts(stack_run, settings)
    function = stack_run.function("process_mail").inputs
    assert function["location"] == settings.region
    assert function["eventTrigger"] == {
        "eventType": "google.cloud.firestore.document.v1.created",
        "triggerRegion": settings.firestore_location,
        "retryPolicy": "RETRY_POLICY_RETRY",
        "serviceAccountEmail": trigger.removeprefix("serviceAccount:"),
        "eventFilters": [
            {"attribute": "database", "value": settings.database},
            {"attribute": "document", "value": f"{settings.mail_collection}/{{docId}}", "operator": "match-path-pattern"},
        ],
    }


def test_function_settings_follow_the_stack_config(pulumi_mocks: PulumiHarness, stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    runtime, _ = accounts(stack_run, settings)
    function = stack_run.function("process_mail").inputs
    assert function["buildConfig"]["runtime"] == settings.runtime
    assert function["buildConfig"]["entryPoint"] == "process_mail"
    service = function["serviceConfig"]
    assert service["serviceAccountEmail"] == runtime.removeprefix("serviceAccount:")
    assert service["ingressSettings"] == "ALLOW_INTERNAL_ONLY"
    assert service["minInstanceCount"] == settings.min_instances
    assert service["maxInstanceCount"] == settings.max_instances
    assert service["maxInstanceRequestConcurrency"] == settings.concurrency
    assert service["availableMemory"] == settings.memory
    assert service["availableCpu"] == settings.cpu
    assert service["timeoutSeconds"] == settings.timeout_seconds

    expected_env = {
        "SMTP_CONNECTION_URI": settings.smtp_connection_uri,
        "SMTP_PROVIDER": settings.smtp_provider,
        "DEFAULT_FROM": settings.default_from,
        "MAIL_COLLECTION": settings.mail_collection,
        "TTL_EXPIRE_TYPE": settings.ttl_expire_type,
        "TTL_EXPIRE_VALUE": str(settings.ttl_expire_value),
        "DATABASE": settings.database,
        "GOOGLE_CLOUD_PROJECT": settings.project,
        "MAX_MESSAGE_BYTES": str(settings.max_message_bytes),
        # The claim's lease outlasts both functions' timeouts.
        "LEASE_SECONDS": str(max(settings.timeout_seconds, settings.sweep_timeout_seconds) + 60),
        "MAX_ATTEMPTS": str(settings.max_attempts),
        "RETRY_BACKOFF_SECONDS": str(settings.retry_backoff_seconds),
        "RETRY_BACKOFF_MAX_SECONDS": str(settings.retry_backoff_max_seconds),
        "DELIVERY_GUARANTEE": settings.delivery_guarantee,
        "SWEEP_WORKERS": str(settings.sweep_workers),
        # The sweep stops taking documents 30 s before its function's timeout.
        "SWEEP_BUDGET_SECONDS": str(settings.sweep_timeout_seconds - 30),
    }
    for name, value in (
        ("DEFAULT_REPLY_TO", settings.default_reply_to),
        ("USERS_COLLECTION", settings.users_collection),
        ("TEMPLATES_COLLECTION", settings.templates_collection),
        ("TEMPLATE_CACHE_SECONDS", str(settings.template_cache_seconds) if settings.templates_collection else None),
    ):
        if value is not None:
            expected_env[name] = value
    assert service["environmentVariables"] == expected_env

    secret = stack_run.one("gcp:secretmanager/secret:Secret")
    version_state = next(
        r.state for r in pulumi_mocks.monitor.resources.values() if r.urn == stack_run.one("gcp:secretmanager/secretVersion:SecretVersion").urn
    )
    assert version_state["version"].isdigit()
    assert service["secretEnvironmentVariables"] == [
        {"key": "SMTP_PASSWORD", "projectId": settings.project, "secret": secret.inputs["secretId"], "version": version_state["version"]}
    ]


def test_function_waits_for_its_grants_and_apis(stack_run: StackRun) -> None:
    function = stack_run.function("process_mail")
    grants_before = stack_run.of_type(PROJECT_MEMBER) + stack_run.of_type(SECRET_MEMBER) + stack_run.of_type(ACCOUNT_MEMBER)
    assert len(grants_before) == 5
    assert {r.urn for r in grants_before} <= set(function.dependencies)
    assert {r.urn for r in stack_run.of_type("gcp:projects/service:Service")} <= set(function.dependencies)
    # The invoker grant needs the function's service, so it comes after the function.
    invoker = next(r for r in stack_run.of_type(SERVICE_MEMBER) if r.inputs["name"].endswith(f"/services/{function.inputs['name']}"))
    assert function.urn in invoker.dependencies


def test_every_resource_is_a_child_of_the_component(stack_run: StackRun) -> None:
    component = stack_run.one("mailer:index:EmailTrigger")
    sweep = stack_run.one("mailer:index:EmailSweep")
    assert sweep.parent == component.urn
    # The sweep's own resources hang under the sweep component, everything else under EmailTrigger.
    sweep_types = {"gcp:pubsub/topic:Topic", "gcp:cloudscheduler/job:Job", TOPIC_MEMBER, "gcp:firestore/index:Index"}
    for registration in stack_run.registrations:
        if registration in (component, sweep):
            continue
        in_sweep = registration.type in sweep_types or registration.name.startswith(f"{sweep.name}-")
        assert registration.parent == (sweep.urn if in_sweep else component.urn), registration.name
    assert [r.name for r in stack_run.registrations if r.parent == sweep.urn]


def test_source_is_private_and_named_by_content(stack_run: StackRun) -> None:
    bundle = collect_source(REPO_ROOT / "functions")
    bucket = stack_run.one("gcp:storage/bucket:Bucket").inputs
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    archive = stack_run.one("gcp:storage/bucketObject:BucketObject").inputs
    assert archive["name"] == bundle.object_name
    assert isinstance(archive["source"], pulumi.AssetArchive)
    assert sorted(archive["source"].assets) == list(bundle.files)
    storage = stack_run.function("process_mail").inputs["buildConfig"]["source"]["storageSource"]
    assert storage == {"bucket": "mailer-source-8f3a2c1", "object": bundle.object_name}


def test_ttl_policy_follows_the_stack(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    fields = stack_run.of_type("gcp:firestore/field:Field")
    if not settings.ttl_enabled:
        assert fields == []
        return
    assert len(fields) == 1
    ttl = fields[0].inputs
    assert (ttl["collection"], ttl["field"], ttl["database"]) == (settings.mail_collection_group, "delivery.expireAt", settings.database)
    assert ttl["ttlConfig"] == {} and ttl["indexConfig"] == {}


def test_missing_password_fails_naming_the_key(pulumi_mocks: PulumiHarness, stack_file: Path) -> None:
    pulumi_mocks.install(stack_name(stack_file), stack_config(stack_file), [], preview=True)
    with pytest.raises(ConfigError) as raised:
        pulumi_mocks.run_main()
    message = str(raised.value)
    assert "mailer:smtpPassword" in message and "pulumi config set --secret mailer:smtpPassword" in message
    assert "\n" not in message
    assert pulumi_mocks.monitor.registrations == []


def test_plain_text_password_is_refused(pulumi_mocks: PulumiHarness, stack_file: Path) -> None:
    config = {**stack_config(stack_file), "mailer:smtpPassword": TEST_PASSWORD}
    pulumi_mocks.install(stack_name(stack_file), config, [], preview=True)
    with pytest.raises(ConfigError) as raised:
        pulumi_mocks.run_main()
    assert "mailer:smtpPassword is stored in plain text" in str(raised.value)
    assert TEST_PASSWORD not in str(raised.value)
    assert pulumi_mocks.monitor.registrations == []


def test_invalid_setting_fails_at_preview_before_any_resource(pulumi_mocks: PulumiHarness, stack_file: Path) -> None:
    config = {**stack_config(stack_file), "mailer:smtpPassword": TEST_PASSWORD, "mailer:region": "nam5"}
    pulumi_mocks.install(stack_name(stack_file), config, ["mailer:smtpPassword"], preview=True)
    with pytest.raises(ConfigError, match="^mailer:region is 'nam5', a Firestore multi-region"):
        pulumi_mocks.run_main()
    assert pulumi_mocks.monitor.registrations == []

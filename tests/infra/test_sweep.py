"""The sweep under Pulumi mocks: Cloud Scheduler -> Pub/Sub topic -> Eventarc -> sweep_mail, its identities,
and the Firestore indexes its queries need. Stack-wide tests run __main__.py against every stack file."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from infra.sweep import SWEEP_INDEXES
from tests.infra.conftest import PROJECT_NUMBER, PulumiHarness, Registration, StackRun, is_secret, plain_occurrences
from tests.infra.test_component import build
from tests.infra.test_index_rules import ASKED, DUE, LAPSED
from tests.infra.test_stacks import TOPIC_MEMBER, accounts, settings_for
from tests.support.indexes import index_covering, missing_index

TOPIC = "gcp:pubsub/topic:Topic"
JOB = "gcp:cloudscheduler/job:Job"
INDEX = "gcp:firestore/index:Index"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
API = "gcp:projects/service:Service"
SCHEDULER_AGENT_EMAIL = f"service-{PROJECT_NUMBER}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"


def topic_id(run: StackRun) -> str:
    topic = run.one(TOPIC).inputs
    return f"projects/{topic['project']}/topics/{topic['name']}"


def api(run: StackRun, name: str) -> Registration:
    return next(r for r in run.of_type(API) if r.inputs["service"] == f"{name}.googleapis.com")


def state_of(harness: PulumiHarness, registration: Registration) -> dict[str, Any]:
    """What the mocked provider answered for a resource (its computed outputs)."""
    assert harness.monitor is not None
    return next(r.state for r in harness.monitor.resources.values() if r.urn == registration.urn)


# --- every stack file ---------------------------------------------------------------------------------


def test_scheduler_publishes_to_the_sweep_topic_on_the_stacks_schedule(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    topic = stack_run.one(TOPIC).inputs
    assert (topic["name"], topic["project"]) == (f"{settings.resource_prefix}-sweep", settings.project)
    job = stack_run.one(JOB).inputs
    assert job["name"] == f"{settings.resource_prefix}-sweep"
    assert (job["project"], job["region"]) == (settings.project, settings.region)
    assert (job["schedule"], job["timeZone"]) == (settings.sweep_schedule, "Etc/UTC")
    assert set(job) & {"httpTarget", "appEngineHttpTarget"} == set()
    assert job["pubsubTarget"]["topicName"] == topic_id(stack_run) == f"projects/{settings.project}/topics/{settings.resource_prefix}-sweep"
    # A small JSON body (sweep_mail ignores it; Pub/Sub refuses an empty message).
    body = json.loads(base64.b64decode(job["pubsubTarget"]["data"]))
    assert isinstance(body, dict) and body


def test_the_sweep_function_is_triggered_by_the_topic_and_never_redelivered(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    _, trigger = accounts(stack_run, settings)
    function = stack_run.function("sweep_mail").inputs
    assert (function["name"], function["location"], function["project"]) == (f"{settings.resource_prefix}-sweep-mail", settings.region, settings.project)
    assert function["eventTrigger"] == {
        "eventType": "google.cloud.pubsub.topic.v1.messagePublished",
        "pubsubTopic": topic_id(stack_run),
        "triggerRegion": settings.region,
        # The next scheduled sweep is the retry.
        "retryPolicy": "RETRY_POLICY_DO_NOT_RETRY",
        "serviceAccountEmail": trigger.removeprefix("serviceAccount:"),
    }


def test_the_sweep_function_runs_alone_internally_with_the_sweep_timeout(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    runtime, _ = accounts(stack_run, settings)
    sweep, send = stack_run.function("sweep_mail").inputs, stack_run.function("process_mail").inputs
    service = sweep["serviceConfig"]
    assert service["ingressSettings"] == "ALLOW_INTERNAL_ONLY"
    assert (service["minInstanceCount"], service["maxInstanceCount"], service["maxInstanceRequestConcurrency"]) == (0, 1, 1)
    assert service["timeoutSeconds"] == settings.sweep_timeout_seconds
    assert service["serviceAccountEmail"] == runtime.removeprefix("serviceAccount:")
    # Same code, runtime and size as process_mail.
    assert sweep["buildConfig"] == {**send["buildConfig"], "entryPoint": "sweep_mail"}
    for key in ("availableMemory", "availableCpu", "serviceAccountEmail", "ingressSettings", "allTrafficOnLatestRevision"):
        assert service[key] == send["serviceConfig"][key], key


def test_the_sweep_gets_the_same_environment_and_pinned_password(pulumi_mocks: PulumiHarness, stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    sweep = stack_run.function("sweep_mail").inputs["serviceConfig"]
    send = stack_run.function("process_mail").inputs["serviceConfig"]
    assert sweep["environmentVariables"] == send["environmentVariables"]
    environment = sweep["environmentVariables"]
    assert environment["SWEEP_BUDGET_SECONDS"] == str(settings.sweep_timeout_seconds - 30)
    assert (environment["MAX_ATTEMPTS"], environment["SWEEP_WORKERS"]) == (str(settings.max_attempts), str(settings.sweep_workers))
    assert (environment["RETRY_BACKOFF_SECONDS"], environment["RETRY_BACKOFF_MAX_SECONDS"]) == (
        str(settings.retry_backoff_seconds), str(settings.retry_backoff_max_seconds)
    )
    assert environment["DELIVERY_GUARANTEE"] == settings.delivery_guarantee
    version = state_of(pulumi_mocks, stack_run.one("gcp:secretmanager/secretVersion:SecretVersion"))["version"]
    assert version.isdigit()
    secret = stack_run.one("gcp:secretmanager/secret:Secret").inputs["secretId"]
    expected = [{"key": "SMTP_PASSWORD", "projectId": settings.project, "secret": secret, "version": version}]
    assert sweep["secretEnvironmentVariables"] == send["secretEnvironmentVariables"] == expected


def test_cloud_scheduler_publishes_as_its_service_agent_on_that_topic_only(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    agents = {r.inputs["service"]: r for r in stack_run.of_type(SERVICE_IDENTITY)}
    assert set(agents) == {"eventarc.googleapis.com", "cloudscheduler.googleapis.com", "pubsub.googleapis.com"}
    assert agents["cloudscheduler.googleapis.com"].inputs["project"] == settings.project
    publishers = [r.inputs for r in stack_run.registrations if r.inputs.get("role") == "roles/pubsub.publisher"]
    assert publishers == [stack_run.one(TOPIC_MEMBER).inputs]
    assert publishers[0]["member"] == f"serviceAccount:{SCHEDULER_AGENT_EMAIL}"
    assert publishers[0]["topic"] == stack_run.one(TOPIC).inputs["name"]
    # Nothing is granted on the project to the scheduler agent or for the sweep.
    project_members = {r.inputs["member"] for r in stack_run.of_type("gcp:projects/iAMMember:IAMMember")}
    assert f"serviceAccount:{SCHEDULER_AGENT_EMAIL}" not in project_members
    assert api(stack_run, "cloudscheduler").inputs["disableOnDestroy"] is False


def test_the_trigger_account_invokes_only_the_sweeps_own_service(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    _, trigger = accounts(stack_run, settings)
    sweep = stack_run.function("sweep_mail")
    service = f"projects/{settings.project}/locations/{settings.region}/services/{sweep.inputs['name']}"
    invoker = next(r for r in stack_run.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember") if r.inputs["name"] == service)
    assert (invoker.inputs["role"], invoker.inputs["member"], invoker.inputs["location"]) == ("roles/run.invoker", trigger, settings.region)
    assert sweep.urn in invoker.dependencies


def test_deployment_order_avoids_first_deploy_races(stack_run: StackRun) -> None:
    sweep = stack_run.function("sweep_mail")
    # Like process_mail: the function waits for every API and for the runtime and trigger grants.
    grants = [
        r for r in stack_run.registrations
        if r.type in ("gcp:projects/iAMMember:IAMMember", "gcp:secretmanager/secretIamMember:SecretIamMember", "gcp:serviceaccount/iAMMember:IAMMember")
    ]
    assert len(grants) == 5
    assert {r.urn for r in grants} <= set(sweep.dependencies)
    assert {r.urn for r in stack_run.of_type(API)} <= set(sweep.dependencies)
    # The job, which starts everything, comes last: after its API, the publisher grant, the function,
    # its invoker grant and the indexes (a query before its index exists fails).
    job = stack_run.one(JOB)
    invoker = next(r for r in stack_run.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember") if sweep.urn in r.dependencies)
    needed = [api(stack_run, "cloudscheduler"), stack_run.one(TOPIC_MEMBER), sweep, invoker, *stack_run.of_type(INDEX)]
    assert {r.urn for r in needed} <= set(job.dependencies)
    assert api(stack_run, "pubsub").urn in stack_run.one(TOPIC).dependencies
    agent = next(r for r in stack_run.of_type(SERVICE_IDENTITY) if r.inputs["service"] == "cloudscheduler.googleapis.com")
    assert api(stack_run, "cloudscheduler").urn in agent.dependencies


def test_the_sweeps_indexes_are_declared_on_the_mail_collection(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    indexes = stack_run.of_type(INDEX)
    assert len(indexes) == len(SWEEP_INDEXES) == 2
    declared = []
    for index in indexes:
        inputs = index.inputs
        assert (inputs["project"], inputs["database"], inputs["collection"], inputs["queryScope"]) == (
            settings.project, settings.database, settings.mail_collection_group, "COLLECTION"
        )
        assert api(stack_run, "firestore").urn in index.dependencies
        declared.append(tuple((field["fieldPath"], field["order"]) for field in inputs["fields"]))
    assert sorted(declared) == sorted(SWEEP_INDEXES)


def test_the_registered_indexes_serve_every_sweep_query(stack_run: StackRun, stack_file: Path) -> None:
    # The resources as the engine receives them, not just the data they are built from.
    settings = settings_for(stack_file)
    indexes = [r.inputs for r in stack_run.of_type(INDEX)]
    for query in (DUE, ASKED, LAPSED):
        placed = {**query, "collection": settings.mail_collection}
        assert missing_index(placed, indexes) is None
        assert index_covering(placed, indexes) is not None


def test_the_program_exports_the_sweep(stack_run: StackRun, stack_file: Path) -> None:
    settings = settings_for(stack_file)
    assert stack_run.exports["sweep_function_name"] == f"{settings.resource_prefix}-sweep-mail"
    assert stack_run.exports["sweep_topic"] == topic_id(stack_run)
    assert stack_run.exports["sweep_schedule"] == settings.sweep_schedule


# --- the component with settings no stack file uses ---------------------------------------------------


def test_indexes_follow_a_nested_collection_and_a_named_database(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks, **{"mailer:mailCollection": "tenants/acme/mail", "mailer:database": "mail-db"})
    for index in run.of_type(INDEX):
        # Composite indexes are per collection id: the last segment of the path.
        assert (index.inputs["collection"], index.inputs["database"], index.inputs["queryScope"]) == ("mail", "mail-db", "COLLECTION")
    indexes = [r.inputs for r in run.of_type(INDEX)]
    assert missing_index({**DUE, "collection": "tenants/acme/mail"}, indexes) is None
    # An index on another collection id serves nothing here.
    assert missing_index({**DUE, "collection": "tenants/acme/outbox"}, indexes) is not None
    environment = run.function("sweep_mail").inputs["serviceConfig"]["environmentVariables"]
    assert (environment["MAIL_COLLECTION"], environment["DATABASE"]) == ("tenants/acme/mail", "mail-db")


def test_retry_and_sweep_settings_reach_both_functions_and_the_job(pulumi_mocks: PulumiHarness) -> None:
    overrides = {
        "mailer:maxAttempts": "8", "mailer:retryBackoffSeconds": "30", "mailer:retryBackoffMaxSeconds": "600",
        "mailer:deliveryGuarantee": "at-most-once", "mailer:sweepSchedule": "*/5 * * * *",
        "mailer:sweepTimeoutSeconds": "540", "mailer:sweepWorkers": "16",
        # process_mail's scaling does not change the sweep's one instance.
        "mailer:minInstances": "2", "mailer:maxInstances": "7", "mailer:concurrency": "12", "mailer:memory": "2Gi", "mailer:cpu": "2",
        "mailer:timeoutSeconds": "120",
    }
    run = build(pulumi_mocks, **overrides)
    for entry_point in ("process_mail", "sweep_mail"):
        environment = run.function(entry_point).inputs["serviceConfig"]["environmentVariables"]
        assert {name: environment[name] for name in (
            "MAX_ATTEMPTS", "RETRY_BACKOFF_SECONDS", "RETRY_BACKOFF_MAX_SECONDS", "DELIVERY_GUARANTEE", "SWEEP_WORKERS",
            "SWEEP_BUDGET_SECONDS", "LEASE_SECONDS",
        )} == {
            "MAX_ATTEMPTS": "8", "RETRY_BACKOFF_SECONDS": "30", "RETRY_BACKOFF_MAX_SECONDS": "600",
            "DELIVERY_GUARANTEE": "at-most-once", "SWEEP_WORKERS": "16", "SWEEP_BUDGET_SECONDS": "510",
            # The lease outlasts the longer of the two timeouts (the sweep's 540 s here).
            "LEASE_SECONDS": "600",
        }, entry_point
    service = run.function("sweep_mail").inputs["serviceConfig"]
    assert (service["timeoutSeconds"], service["availableMemory"], service["availableCpu"]) == (540, "2Gi", "2")
    assert (service["minInstanceCount"], service["maxInstanceCount"], service["maxInstanceRequestConcurrency"]) == (0, 1, 1)
    assert run.function("process_mail").inputs["serviceConfig"]["timeoutSeconds"] == 120
    assert run.one(JOB).inputs["schedule"] == "*/5 * * * *"


def test_a_uri_carrying_a_password_stays_secret_on_the_sweep_too(pulumi_mocks: PulumiHarness) -> None:
    uri = "smtp://mailer:Uri-Pa55-zz9@relay.acme.test:587"
    run = build(pulumi_mocks, uri_is_secret=True, **{"mailer:smtpConnectionUri": uri, "mailer:allowPasswordInUri": "true"})
    sweep = run.function("sweep_mail")
    assert is_secret(sweep.raw["serviceConfig"]["environmentVariables"]["SMTP_CONNECTION_URI"])
    assert plain_occurrences(sweep.raw, "Uri-Pa55-zz9") == []


def test_resource_prefix_names_the_sweep_and_the_component_exports_it(pulumi_mocks: PulumiHarness) -> None:
    exports: dict[str, Any] = {}
    run = build(pulumi_mocks, exports, **{"mailer:resourcePrefix": "mail-eu", "mailer:sweepSchedule": "*/2 * * * *"})
    assert run.function("sweep_mail").inputs["name"] == "mail-eu-sweep-mail"
    assert run.one(TOPIC).inputs["name"] == run.one(JOB).inputs["name"] == "mail-eu-sweep"
    assert {name: exports[name] for name in ("sweep_function_name", "sweep_topic", "sweep_schedule")} == {
        "sweep_function_name": "mail-eu-sweep-mail",
        "sweep_topic": "projects/acme-mailer-unit/topics/mail-eu-sweep",
        "sweep_schedule": "*/2 * * * *",
    }

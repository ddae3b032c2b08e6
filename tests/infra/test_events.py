"""Lifecycle events in the program (issue 12 item 3): the stack keys are checked, the functions learn what
to publish and where, and the runtime account may publish to that one topic (or channel) and nowhere else."""

from __future__ import annotations

import pytest

from infra.config import MailerSettings, settings_problems
from infra.mailer import EmailTrigger, EmailTriggerArgs
from infra.source import collect_source
from tests.infra.conftest import BASE_SETTINGS, REPO_ROOT, TEST_PASSWORD, PulumiHarness, StackRun

BASE = BASE_SETTINGS
TOPIC = "gcp:pubsub/topic:Topic"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
RUNTIME = "serviceAccount:mailer-runtime@acme-mailer-unit.iam.gserviceaccount.com"
CHANNEL = "projects/acme-mailer-unit/locations/europe-west3/channels/firebase"
EVENT_VARIABLES = {"EVENTS", "EVENTS_TOPIC", "EVENTS_CHANNEL", "PUBSUB_ENDPOINT", "EVENTARC_PUBLISHING_ENDPOINT"}


def build(harness: PulumiHarness, **overrides) -> StackRun:
    settings = MailerSettings.model_validate({**BASE, **overrides})
    args = EmailTriggerArgs(settings=settings, smtp_password=TEST_PASSWORD, source=collect_source(REPO_ROOT / "functions"))
    return harness.run(lambda: EmailTrigger("unit", args))


def environments(run: StackRun) -> list[dict]:
    return [run.function(entry).inputs["serviceConfig"]["environmentVariables"] for entry in ("process_mail", "sweep_mail")]


def grants_to_runtime(run: StackRun) -> list[tuple[str, str]]:
    return sorted((r.type, r.inputs["role"]) for r in run.registrations if r.inputs.get("member") == RUNTIME)


def test_events_to_a_topic_create_it_and_grant_publish_on_that_topic_only(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks, **{"mailer:events": '["onStart", "onSuccess", "onError", "onComplete"]',
                                 "mailer:eventsTopic": "mail-events"})
    topics = [r for r in run.of_type(TOPIC) if r.inputs["name"] == "mail-events"]
    assert len(topics) == 1
    (grant,) = [r for r in run.of_type(TOPIC_MEMBER) if r.inputs["member"] == RUNTIME]
    assert grant.inputs["role"] == "roles/pubsub.publisher" and grant.inputs["topic"] == "mail-events"
    # Nothing else new for the runtime account: no project-wide publisher role of any kind.
    assert grants_to_runtime(run) == sorted([
        (PROJECT_MEMBER, "roles/datastore.user"),
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor"),
        (TOPIC_MEMBER, "roles/pubsub.publisher"),
    ])
    for env in environments(run):
        assert env["EVENTS"] == "onStart,onSuccess,onError,onComplete"
        assert env["EVENTS_TOPIC"] == "projects/acme-mailer-unit/topics/mail-events"
        assert not {"EVENTS_CHANNEL", "PUBSUB_ENDPOINT", "EVENTARC_PUBLISHING_ENDPOINT"} & set(env)
    # Both functions start only once the runtime account may publish.
    for entry in ("process_mail", "sweep_mail"):
        assert grant.urn in run.function(entry).dependencies


def test_events_to_a_channel_grant_eventarc_publisher_and_enable_the_publishing_api(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks, **{"mailer:events": "onSuccess,onError", "mailer:eventsChannel": CHANNEL})
    assert [r.inputs["name"] for r in run.of_type(TOPIC)] == ["mailer-sweep"]  # no events topic
    assert grants_to_runtime(run) == sorted([
        (PROJECT_MEMBER, "roles/datastore.user"),
        ("gcp:secretmanager/secretIamMember:SecretIamMember", "roles/secretmanager.secretAccessor"),
        (PROJECT_MEMBER, "roles/eventarc.publisher"),
    ])
    assert any(r.inputs.get("service") == "eventarcpublishing.googleapis.com" for r in run.of_type("gcp:projects/service:Service"))
    for env in environments(run):
        assert env["EVENTS"] == "onSuccess,onError" and env["EVENTS_CHANNEL"] == CHANNEL and "EVENTS_TOPIC" not in env


def test_without_events_nothing_is_created_granted_or_set(pulumi_mocks: PulumiHarness) -> None:
    run = build(pulumi_mocks)
    assert [r.inputs["name"] for r in run.of_type(TOPIC)] == ["mailer-sweep"]
    assert all(role not in ("roles/pubsub.publisher", "roles/eventarc.publisher") for _, role in grants_to_runtime(run))
    for env in environments(run):
        assert not EVENT_VARIABLES & set(env)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"mailer:events": '["onStart", "onSent"]', "mailer:eventsTopic": "mail-events"}, "mailer:events has 'onSent'"),
    ({"mailer:events": "[onStart", "mailer:eventsTopic": "mail-events"}, "mailer:events is not a valid list"),
    ({"mailer:events": '["onStart"]'}, "mailer:events is set but not where to publish"),
    ({"mailer:eventsTopic": "mail-events"}, "mailer:eventsTopic is set but mailer:events is empty"),
    ({"mailer:events": "onStart", "mailer:eventsTopic": "mail-events", "mailer:eventsChannel": CHANNEL},
     "mailer:eventsTopic and mailer:eventsChannel are both set"),
    ({"mailer:events": "onStart", "mailer:eventsTopic": "goog-events"}, "mailer:eventsTopic is 'goog-events'"),
    ({"mailer:events": "onStart", "mailer:eventsChannel": "firebase"}, "mailer:eventsChannel is 'firebase'"),
    ({"mailer:events": "onStart", "mailer:eventsChannel": "projects/other-project/locations/us-central1/channels/firebase"},
     "mailer:eventsChannel is in project 'other-project'"),
])
def test_event_keys_are_checked_and_errors_name_them(extra: dict, expected: str) -> None:
    settings, problems = settings_problems({**BASE, **extra})
    assert settings is None and len(problems) == 1 and problems[0].startswith(expected), problems


def test_event_names_may_be_full_type_names_and_repeat() -> None:
    settings, problems = settings_problems({**BASE, "mailer:events": (
        '["firebase.extensions.firestore-send-email.v1.onStart", "onStart", "onComplete"]'), "mailer:eventsTopic": "mail-events"})
    assert problems == [] and settings is not None and settings.events == ["onStart", "onComplete"]

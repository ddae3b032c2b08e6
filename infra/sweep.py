"""EmailSweep: acts on every mail document that is due but has no event coming to it.

A document is due when its retry time (or its ``sendAt``) has come, when a client asked for another
attempt, or when the lease of a PROCESSING attempt lapsed (the instance died). None of these writes a
new document, so the ``created`` trigger never sees them. Cloud Scheduler publishes a small message on
``mailer:sweepSchedule`` to a Pub/Sub topic; Eventarc delivers it to a second function, ``sweep_mail``
(same source archive, same runtime account and environment as ``process_mail``), which queries the mail
collection and hands each due document to the same attempt path.

Children (parented to this component, itself a child of EmailTrigger): the topic, the Cloud Scheduler
service agent with ``pubsub.publisher`` on that topic only, the sweep function, ``run.invoker`` on its
own Cloud Run service only for the trigger account, the scheduler job, and the Firestore composite
indexes the sweep's queries need (``SWEEP_INDEXES``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_gcp as gcp

from infra import iam
from infra.config import MailerSettings

ENTRY_POINT = "sweep_mail"
EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
# A failed sweep is not redelivered: the next scheduled sweep is the retry, and redeliveries would only
# stack sweeps on top of each other.
RETRY_POLICY = "RETRY_POLICY_DO_NOT_RETRY"
# Internal-only ingress admits Eventarc and Pub/Sub, nothing from the internet.
INGRESS = "ALLOW_INTERNAL_ONLY"
# One sweep at a time is enough (it works through everything due with mailer:sweepWorkers threads);
# a sweep that overlaps another is still safe, since every attempt is claimed with a precondition.
MAX_INSTANCES = 1
CONCURRENCY = 1
TIME_ZONE = "Etc/UTC"
# sweep_mail ignores the payload; Pub/Sub only needs a message that is not empty.
MESSAGE = {"source": "mailer-sweep-schedule"}


def topic_name(resource_prefix: str) -> str:
    """The sweep's Pub/Sub topic (and scheduler job) name; the local scheduler names its events after it."""
    return f"{resource_prefix}-sweep"
MESSAGE_DATA = base64.b64encode(json.dumps(MESSAGE, separators=(",", ":")).encode()).decode("ascii")

IndexFields = tuple[tuple[str, str], ...]  # ((field path, "ASCENDING" | "DESCENDING"), ...)

# The composite indexes of the sweep's queries on the mail collection (functions/mailer/sweep.py), as
# plain data read by both the resources below and the tests that tie each query to an index.
# Firestore appends __name__ to each index itself (same direction as the last field); it is not listed.
SWEEP_INDEXES: tuple[IndexFields, ...] = (
    # due:    state IN [PENDING, RETRY] AND nextAttemptTime <= now ORDER BY nextAttemptTime
    # asked:  state IN [PENDING, RETRY] AND nextAttemptTime == null
    (("delivery.state", "ASCENDING"), ("delivery.nextAttemptTime", "ASCENDING")),
    # lapsed: state == PROCESSING AND leaseExpireTime <= now ORDER BY leaseExpireTime
    (("delivery.state", "ASCENDING"), ("delivery.leaseExpireTime", "ASCENDING")),
)
INDEX_QUERY_SCOPE = "COLLECTION"


def index_slug(fields: IndexFields) -> str:
    """A stable resource-name suffix for one index, e.g. state-nextattempttime."""
    parts = [path.rsplit(".", 1)[-1].lower() + ("-desc" if order == "DESCENDING" else "") for path, order in fields]
    return re.sub(r"[^a-z0-9-]+", "", "-".join(parts))


@dataclass(frozen=True)
class EmailSweepArgs:
    """Inputs of the EmailSweep component: the settings and what it shares with process_mail."""

    settings: MailerSettings
    # The same plain environment and SMTP password variable (pinned secret version) as process_mail.
    environment: Mapping[str, pulumi.Input[str]]
    secret_environment_variables: Sequence[Mapping[str, pulumi.Input[str]]]
    source_bucket: pulumi.Input[str]
    source_object: pulumi.Input[str]
    runtime_account_email: pulumi.Input[str]
    trigger_account_email: pulumi.Input[str]
    # The enabled APIs by short name ("pubsub", "cloudscheduler", "firestore", ...).
    apis: Mapping[str, pulumi.Resource]
    # Grants the runtime and trigger accounts need before the function may run.
    grants: Sequence[pulumi.Resource] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


class EmailSweep(pulumi.ComponentResource):
    """Cloud Scheduler -> Pub/Sub topic -> Eventarc -> sweep_mail, and the indexes its queries need."""

    topic: gcp.pubsub.Topic
    function: gcp.cloudfunctionsv2.Function
    job: gcp.cloudscheduler.Job
    indexes: dict[IndexFields, gcp.firestore.Index]

    def __init__(self, name: str, args: EmailSweepArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mailer:index:EmailSweep", name, None, opts)
        settings, project = args.settings, args.settings.project
        prefix = settings.resource_prefix
        child = pulumi.ResourceOptions(parent=self)

        def after(*resources: Any) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=list(resources))

        self.topic = gcp.pubsub.Topic(
            f"{name}-topic", project=project, name=topic_name(prefix), labels=dict(args.labels), opts=after(args.apis["pubsub"])
        )

        # Cloud Scheduler publishes as its service agent; it may publish to this topic and nowhere else.
        scheduler_agent = iam.service_agent(f"{name}-scheduler-agent", project, "cloudscheduler", after(args.apis["cloudscheduler"]))
        publisher = iam.grant_topic_publisher(
            f"{name}-publisher", project, self.topic, iam.service_account_member(scheduler_agent.email), child
        )

        # Built before the first sweep runs: without them Firestore fails the sweep's queries with
        # FAILED_PRECONDITION (the emulator never does, so only these declarations prevent it).
        self.indexes = {
            fields: gcp.firestore.Index(
                f"{name}-index-{index_slug(fields)}",
                project=project,
                database=settings.database,
                collection=settings.mail_collection_group,
                query_scope=INDEX_QUERY_SCOPE,
                fields=[{"field_path": path, "order": order} for path, order in fields],
                opts=after(args.apis["firestore"]),
            )
            for fields in SWEEP_INDEXES
        }

        self.function = gcp.cloudfunctionsv2.Function(
            f"{name}-function",
            project=project,
            location=settings.region,
            name=f"{prefix}-sweep-mail",
            description="Sends what is due on a schedule: retries, scheduled mail, client requests and lapsed attempts",
            labels=dict(args.labels),
            build_config={
                "runtime": settings.runtime,
                "entry_point": ENTRY_POINT,
                "source": {"storage_source": {"bucket": args.source_bucket, "object": args.source_object}},
            },
            service_config={
                "service_account_email": args.runtime_account_email,
                "ingress_settings": INGRESS,
                "all_traffic_on_latest_revision": True,
                "min_instance_count": 0,
                "max_instance_count": MAX_INSTANCES,
                "max_instance_request_concurrency": CONCURRENCY,
                "available_memory": settings.memory,
                "available_cpu": settings.cpu,
                "timeout_seconds": settings.sweep_timeout_seconds,
                "environment_variables": dict(args.environment),
                "secret_environment_variables": [dict(variable) for variable in args.secret_environment_variables],
            },
            event_trigger={
                "event_type": EVENT_TYPE,
                "pubsub_topic": self.topic.id,
                "trigger_region": settings.region,
                "retry_policy": RETRY_POLICY,
                "service_account_email": args.trigger_account_email,
            },
            # As for process_mail: wait for the APIs and the grants, so the first deploy does not race them.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.apis.values(), *args.grants]),
        )

        invoker = iam.grant_invoker_on_service(
            f"{name}-invoker",
            project,
            settings.region,
            self.function.service_config.apply(lambda config: config.service if config else None),
            iam.service_account_member(args.trigger_account_email),
            child,
        )

        # Last: the first message is published only once everything that handles it exists.
        self.job = gcp.cloudscheduler.Job(
            f"{name}-job",
            project=project,
            region=settings.region,
            name=topic_name(prefix),
            description="Starts a mail sweep: retries, scheduled mail, client requests and lapsed attempts",
            schedule=settings.sweep_schedule,
            time_zone=TIME_ZONE,
            pubsub_target={"topic_name": self.topic.id, "data": MESSAGE_DATA},
            opts=after(args.apis["cloudscheduler"], publisher, invoker, self.function, *self.indexes.values()),
        )

        self.function_name = self.function.name
        self.topic_id = self.topic.id
        self.schedule = self.job.schedule
        self.register_outputs(
            {
                "function_name": self.function_name,
                "topic": self.topic_id,
                "schedule": self.schedule,
                "job": self.job.name,
            }
        )

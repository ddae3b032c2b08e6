"""EmailTrigger: everything that turns "a document lands in the mail collection" into "an email is sent".

Children (all parented to the component): the APIs, the SMTP password secret (or, with XOAUTH2, the
OAuth2 client secret and refresh token secrets), the runtime and trigger
service accounts with their grants, the source bucket and archive, the 2nd-gen function with its
Firestore trigger, the EmailSweep (infra/sweep.py: the scheduled function that sends retries, scheduled
mail and lapsed attempts, with its topic, job and indexes), and (when TTL is on) the Firestore TTL policy
on ``delivery.expireAt``. The sweep is part of the trigger, not an option: without it a RETRY is never
acted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra import iam
from infra.apis import enable_apis
from infra.config import MailerSettings
from infra.source import SourceBundle
from infra.sweep import EmailSweep, EmailSweepArgs

ENTRY_POINT = "process_mail"
# `created`, not `written`/`updated`: the function writes `delivery` back into the same document, and
# with those types each status write would invoke it again (4 invocations per email, as the Firebase
# extension does). With `created` every email costs exactly one invocation.
EVENT_TYPE = "google.cloud.firestore.document.v1.created"
RETRY_POLICY = "RETRY_POLICY_RETRY"
INGRESS = "ALLOW_INTERNAL_ONLY"
TTL_FIELD = "delivery.expireAt"
LABELS = {"app": "mailer", "managed-by": "pulumi"}
# A PROCESSING claim must outlast every attempt, or a slow send could be claimed (and sent) a second
# time while the first is still running. Attempts run in process_mail and in sweep_mail, each killed at
# its own timeout, so the lease is the longer timeout plus a margin.
LEASE_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class EmailTriggerArgs:
    """Inputs of the EmailTrigger component."""

    settings: MailerSettings
    # None with XOAUTH2 (settings.uses_xoauth2), which takes the two OAuth2 secrets below instead.
    smtp_password: Optional[pulumi.Input[str]]
    source: SourceBundle
    # True when the URI itself carries a password or was set with --secret: keep it secret in state.
    smtp_uri_is_secret: bool = False
    oauth2_client_secret: Optional[pulumi.Input[str]] = None
    oauth2_refresh_token: Optional[pulumi.Input[str]] = None


# Runtime-read secrets (issue 11): the function reads each of these at versions/latest through Secret
# Manager (functions/mailer/credentials.py) instead of a pinned secret environment variable.
PASSWORD_SECRET_ENV = "SMTP_PASSWORD_SECRET"
OAUTH2_CLIENT_SECRET_ENV = "SMTP_OAUTH2_CLIENT_SECRET_SECRET"
OAUTH2_REFRESH_TOKEN_ENV = "SMTP_OAUTH2_REFRESH_TOKEN_SECRET"


def document_pattern(collection: str) -> str:
    return f"{collection}/{{docId}}"


def lease_seconds(settings: MailerSettings) -> int:
    """How long a claim holds: the longest an attempt can run (either function's timeout) plus a margin."""
    return max(settings.timeout_seconds, settings.sweep_timeout_seconds) + LEASE_MARGIN_SECONDS


def function_environment(settings: MailerSettings, smtp_uri: pulumi.Input[str]) -> dict[str, pulumi.Input[str]]:
    """The plain environment the function reads; optional settings that are unset are left out."""
    environment: dict[str, pulumi.Input[str]] = {
        "SMTP_CONNECTION_URI": smtp_uri,
        "SMTP_PROVIDER": settings.smtp_provider,
        "DEFAULT_FROM": settings.default_from,
        "MAIL_COLLECTION": settings.mail_collection,
        "TTL_EXPIRE_TYPE": settings.ttl_expire_type,
        "TTL_EXPIRE_VALUE": str(settings.ttl_expire_value),
        "DATABASE": settings.database,
        "GOOGLE_CLOUD_PROJECT": settings.project,
        "MAX_MESSAGE_BYTES": str(settings.max_message_bytes),
        "LEASE_SECONDS": str(lease_seconds(settings)),
        # Retries and the sweep. Both functions get all of these: each runs the same attempt path, and
        # one environment for both keeps the local run (infra's own function_environment) identical.
        "MAX_ATTEMPTS": str(settings.max_attempts),
        "RETRY_BACKOFF_SECONDS": str(settings.retry_backoff_seconds),
        "RETRY_BACKOFF_MAX_SECONDS": str(settings.retry_backoff_max_seconds),
        "DELIVERY_GUARANTEE": settings.delivery_guarantee,
        "SWEEP_WORKERS": str(settings.sweep_workers),
        "SWEEP_BUDGET_SECONDS": str(settings.sweep_budget_seconds),
    }
    optional = {
        "DEFAULT_REPLY_TO": settings.default_reply_to,
        "USERS_COLLECTION": settings.users_collection,
        "TEMPLATES_COLLECTION": settings.templates_collection,
        "TEMPLATE_CACHE_SECONDS": str(settings.template_cache_seconds) if settings.templates_collection else None,
    }
    environment.update({name: value for name, value in optional.items() if value is not None})
    environment.update(events_environment(settings))
    return environment


def events_environment(settings: MailerSettings) -> dict[str, str]:
    """Lifecycle events (issue 12): what to publish and where; nothing when the stack enables none."""
    if not settings.events:
        return {}
    where = (
        {"EVENTS_TOPIC": f"projects/{settings.project}/topics/{settings.events_topic}"}
        if settings.events_topic else {"EVENTS_CHANNEL": settings.events_channel or ""}
    )
    return {"EVENTS": ",".join(settings.events), **where}


class EmailTrigger(pulumi.ComponentResource):
    """A Firestore-triggered 2nd-gen Cloud Function that sends each new mail document over SMTP."""

    function: gcp.cloudfunctionsv2.Function
    # The SMTP password's secret; None with XOAUTH2, which uses the two OAuth2 secrets instead.
    secret: Optional[gcp.secretmanager.Secret]
    secret_version: Optional[gcp.secretmanager.SecretVersion]
    oauth2_client_secret: Optional[gcp.secretmanager.Secret]
    oauth2_refresh_token: Optional[gcp.secretmanager.Secret]
    runtime_account: gcp.serviceaccount.Account
    trigger_account: gcp.serviceaccount.Account
    source_object: gcp.storage.BucketObject
    ttl_policy: Optional[gcp.firestore.Field]
    sweep: EmailSweep

    def __init__(self, name: str, args: EmailTriggerArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mailer:index:EmailTrigger", name, None, opts)
        settings, project = args.settings, args.settings.project
        prefix = settings.resource_prefix
        child = pulumi.ResourceOptions(parent=self)

        apis = enable_apis(name, project, self)

        def after(*services: str) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=[apis[s] for s in services])

        def stored_secret(resource: str, secret_id: str, value: pulumi.Input[str]) -> tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]:
            # Each secret lives only in Secret Manager; state keeps its value encrypted (secret Output).
            secret = gcp.secretmanager.Secret(
                resource, project=project, secret_id=secret_id, replication={"auto": {}}, labels=LABELS, opts=after("secretmanager")
            )
            version = gcp.secretmanager.SecretVersion(
                f"{resource}-version", secret=secret.id, secret_data=pulumi.Output.secret(value), opts=child
            )
            return secret, version

        self.secret = self.secret_version = None
        if args.smtp_password is not None:
            self.secret, self.secret_version = stored_secret(f"{name}-smtp-password", f"{prefix}-smtp-password", args.smtp_password)
        # XOAUTH2 (issue 11): the client secret and the refresh token, always read at run time. The
        # function adds a version to the refresh token's secret when the provider rotates it; this
        # program's version is only the first one (a new value in the stack adds a newer one).
        self.oauth2_client_secret = self.oauth2_refresh_token = None
        oauth2_versions: list[gcp.secretmanager.SecretVersion] = []
        if settings.uses_xoauth2:
            if args.oauth2_client_secret is None or args.oauth2_refresh_token is None:
                raise ValueError("XOAUTH2 needs oauth2_client_secret and oauth2_refresh_token")
            self.oauth2_client_secret, client_version = stored_secret(
                f"{name}-oauth2-client-secret", f"{prefix}-oauth2-client-secret", args.oauth2_client_secret
            )
            self.oauth2_refresh_token, token_version = stored_secret(
                f"{name}-oauth2-refresh-token", f"{prefix}-oauth2-refresh-token", args.oauth2_refresh_token
            )
            oauth2_versions = [client_version, token_version]

        self.runtime_account = iam.create_service_account(
            f"{name}-runtime", project, f"{prefix}-runtime", "Runs the mailer function", after("iam")
        )
        self.trigger_account = iam.create_service_account(
            f"{name}-trigger", project, f"{prefix}-trigger", "Delivers Firestore events to the mailer function", after("iam")
        )
        runtime_member = iam.service_account_member(self.runtime_account.email)
        trigger_member = iam.service_account_member(self.trigger_account.email)

        bindings: list[pulumi.Resource] = [
            iam.grant_project_role(f"{name}-runtime-datastore", project, iam.ROLE_DATASTORE_USER, runtime_member, child),
            iam.grant_project_role(f"{name}-trigger-receiver", project, iam.ROLE_EVENT_RECEIVER, trigger_member, child),
        ]
        # Secret Manager: the runtime account reads each of its secrets, each granted on that secret only,
        # and may add versions to the refresh token's secret only, destroying the one a rotation replaced.
        if self.secret is not None:
            bindings.insert(1, iam.grant_secret_access(f"{name}-runtime-secret", project, self.secret, runtime_member, child))
        if self.oauth2_client_secret is not None and self.oauth2_refresh_token is not None:
            bindings += [
                iam.grant_secret_access(f"{name}-runtime-oauth2-client-secret", project, self.oauth2_client_secret, runtime_member, child),
                iam.grant_secret_access(f"{name}-runtime-oauth2-refresh-token", project, self.oauth2_refresh_token, runtime_member, child),
                iam.grant_secret_version_manager(
                    f"{name}-runtime-oauth2-refresh-token-versions", project, self.oauth2_refresh_token, runtime_member, child
                ),
            ]
        # Lifecycle events (issue 12): the runtime account (both functions run as it) may publish to the
        # events topic this program creates, on that topic only, or to the configured Eventarc channel.
        self.events_topic: Optional[gcp.pubsub.Topic] = None
        if settings.events and settings.events_topic:
            self.events_topic = gcp.pubsub.Topic(
                f"{name}-events", project=project, name=settings.events_topic, labels=LABELS, opts=after("pubsub")
            )
            bindings.append(iam.grant_topic_publisher(f"{name}-runtime-events-publisher", project, self.events_topic, runtime_member, child))
        elif settings.events and settings.events_channel:
            publishing_api = gcp.projects.Service(
                f"{name}-api-eventarcpublishing", project=project, service="eventarcpublishing.googleapis.com",
                disable_on_destroy=False, opts=child,
            )
            bindings += [publishing_api, iam.grant_project_role(
                f"{name}-runtime-events-publisher", project, iam.ROLE_EVENTARC_PUBLISHER, runtime_member, child)]

        _, agent_binding = iam.grant_eventarc_agent(f"{name}-eventarc-agent", project, after("eventarc"))
        bindings.append(agent_binding)
        _, push_binding = iam.grant_push_token_creator(f"{name}-push-token", project, self.trigger_account, after("pubsub"))
        bindings.append(push_binding)

        bucket = gcp.storage.Bucket(
            f"{name}-source",
            project=project,
            location=settings.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            # Holds nothing but our own archives, so teardown may empty it.
            force_destroy=True,
            labels=LABELS,
            opts=child,
        )
        self.source_object = gcp.storage.BucketObject(
            f"{name}-source-archive",
            bucket=bucket.name,
            name=args.source.object_name,
            source=args.source.archive(),
            content_type="application/zip",
            opts=child,
        )

        smtp_uri: pulumi.Input[str] = (
            pulumi.Output.secret(settings.smtp_connection_uri) if args.smtp_uri_is_secret else settings.smtp_connection_uri
        )
        environment = function_environment(settings, smtp_uri)
        secret_environment: list[dict[str, pulumi.Input[str]]] = []
        if self.secret is not None and self.secret_version is not None:
            if settings.smtp_secrets_at_runtime:
                # Runtime mode: the function reads versions/latest itself (and again after a 535), so a
                # new version takes effect without a redeploy.
                environment[PASSWORD_SECRET_ENV] = iam.secret_resource_name(project, self.secret)
            else:
                secret_environment.append({
                    "key": "SMTP_PASSWORD",
                    "project_id": project,
                    "secret": self.secret.secret_id,
                    # The numeric version, not "latest": a new password rolls a new revision.
                    "version": self.secret_version.version,
                })
        if self.oauth2_client_secret is not None and self.oauth2_refresh_token is not None:
            environment[OAUTH2_CLIENT_SECRET_ENV] = iam.secret_resource_name(project, self.oauth2_client_secret)
            environment[OAUTH2_REFRESH_TOKEN_ENV] = iam.secret_resource_name(project, self.oauth2_refresh_token)
        # Secrets read at run time must have a version before the function first starts.
        runtime_versions = [*oauth2_versions, *([self.secret_version] if settings.smtp_secrets_at_runtime and self.secret_version else [])]
        self.function = gcp.cloudfunctionsv2.Function(
            f"{name}-function",
            project=project,
            location=settings.region,
            name=f"{prefix}-send-mail",
            description="Sends an email for each document created in the mail collection",
            labels=LABELS,
            build_config={
                "runtime": settings.runtime,
                "entry_point": ENTRY_POINT,
                "source": {"storage_source": {"bucket": bucket.name, "object": self.source_object.name}},
            },
            service_config={
                "service_account_email": self.runtime_account.email,
                "ingress_settings": INGRESS,
                "all_traffic_on_latest_revision": True,
                "min_instance_count": settings.min_instances,
                "max_instance_count": settings.max_instances,
                "max_instance_request_concurrency": settings.concurrency,
                "available_memory": settings.memory,
                "available_cpu": settings.cpu,
                "timeout_seconds": settings.timeout_seconds,
                "environment_variables": environment,
                "secret_environment_variables": secret_environment,
            },
            event_trigger={
                "event_type": EVENT_TYPE,
                "trigger_region": settings.firestore_location,
                "retry_policy": RETRY_POLICY,
                "service_account_email": self.trigger_account.email,
                "event_filters": [
                    {"attribute": "database", "value": settings.database},
                    {
                        "attribute": "document",
                        "value": document_pattern(settings.mail_collection),
                        "operator": "match-path-pattern",
                    },
                ],
            },
            # Waiting for the grants avoids the first-deploy race where Eventarc or the runtime
            # account is used before its role exists.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*apis.values(), *bindings, *runtime_versions]),
        )

        # Only the function's own Cloud Run service, which exists once the function does.
        iam.grant_invoker_on_service(
            f"{name}-trigger-invoker",
            project,
            settings.region,
            self.function.service_config.apply(lambda config: config.service if config else None),
            trigger_member,
            child,
        )

        self.sweep = EmailSweep(
            f"{name}-sweep",
            EmailSweepArgs(
                settings=settings,
                environment=environment,
                secret_environment_variables=secret_environment,
                source_bucket=bucket.name,
                source_object=self.source_object.name,
                runtime_account_email=self.runtime_account.email,
                trigger_account_email=self.trigger_account.email,
                apis=apis,
                grants=[*bindings, *runtime_versions],
                labels=LABELS,
            ),
            opts=child,
        )

        self.ttl_policy = None
        if settings.ttl_enabled:
            # TTL works per collection group; index_config={} keeps Firestore from indexing the
            # timestamp (Google's advice for TTL fields, and no extra index cost).
            self.ttl_policy = gcp.firestore.Field(
                f"{name}-mail-ttl",
                project=project,
                database=settings.database,
                collection=settings.mail_collection_group,
                field=TTL_FIELD,
                ttl_config={},
                index_config={},
                opts=after("firestore"),
            )

        self.function_name = self.function.name
        self.function_uri = self.function.url
        self.trigger_name = self.function.event_trigger.apply(lambda trigger: trigger.trigger if trigger else None)
        self.secret_id = self.secret.secret_id if self.secret is not None else None
        self.runtime_service_account = self.runtime_account.email
        self.trigger_service_account = self.trigger_account.email
        self.sweep_function_name = self.sweep.function_name
        self.sweep_topic = self.sweep.topic_id
        self.sweep_schedule = self.sweep.schedule
        self.register_outputs(
            {
                "function_name": self.function_name,
                "function_uri": self.function_uri,
                "trigger_name": self.trigger_name,
                "secret_id": self.secret_id,
                "runtime_service_account": self.runtime_service_account,
                "trigger_service_account": self.trigger_service_account,
                "source_object": self.source_object.name,
                "sweep_function_name": self.sweep_function_name,
                "sweep_topic": self.sweep_topic,
                "sweep_schedule": self.sweep_schedule,
            }
        )

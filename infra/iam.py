"""Least-privilege identities: additive *IAMMember grants only, each scoped as narrowly as GCP allows.

Project-wide grants are limited to the three roles that have no narrower scope: datastore.user
(Firestore access is granted per project), eventarc.eventReceiver and the Eventarc service agent role.
The secret, the Cloud Run services, the sweep's Pub/Sub topic and the trigger service account are
granted on the resource itself. Each secret the runtime account reads (the SMTP password, or the OAuth2
client secret and refresh token) gets its own secretAccessor grant; the refresh-token secret alone also
gets secretVersionManager, so the function can store the rotated refresh token Microsoft hands out as a
new version and destroy the version it replaced (secretVersionAdder cannot destroy, and Secret Manager
bills per active version; no narrower predefined role has both versions.add and versions.destroy).
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

ROLE_DATASTORE_USER = "roles/datastore.user"
ROLE_SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
ROLE_SECRET_VERSION_MANAGER = "roles/secretmanager.secretVersionManager"
ROLE_EVENT_RECEIVER = "roles/eventarc.eventReceiver"
ROLE_EVENTARC_AGENT = "roles/eventarc.serviceAgent"
ROLE_RUN_INVOKER = "roles/run.invoker"
ROLE_PUBSUB_PUBLISHER = "roles/pubsub.publisher"
ROLE_TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
# Lifecycle events (issue 12) to an Eventarc channel: pulumi-gcp 10.x has no channel-level IAM resource,
# so this one is granted on the project (events to a topic use pubsub.publisher on that topic instead).
ROLE_EVENTARC_PUBLISHER = "roles/eventarc.publisher"


def service_account_member(email: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.from_input(email).apply(lambda address: f"serviceAccount:{address}")


def create_service_account(
    name: str, project: str, account_id: str, purpose: str, opts: pulumi.ResourceOptions
) -> gcp.serviceaccount.Account:
    return gcp.serviceaccount.Account(
        name, project=project, account_id=account_id, display_name=purpose, description=purpose, opts=opts
    )


def grant_project_role(
    name: str, project: str, role: str, member: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> gcp.projects.IAMMember:
    return gcp.projects.IAMMember(name, project=project, role=role, member=member, opts=opts)


def grant_secret_access(
    name: str, project: str, secret: gcp.secretmanager.Secret, member: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> gcp.secretmanager.SecretIamMember:
    return gcp.secretmanager.SecretIamMember(
        name, project=project, secret_id=secret.secret_id, role=ROLE_SECRET_ACCESSOR, member=member, opts=opts
    )


def grant_secret_version_manager(
    name: str, project: str, secret: gcp.secretmanager.Secret, member: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> gcp.secretmanager.SecretIamMember:
    """secretVersionManager on one secret (the OAuth2 refresh token's): add versions and destroy the one a
    rotation replaced (the role also lists, gets, enables and disables versions; it reads no payload and
    cannot delete the secret or change its IAM)."""
    return gcp.secretmanager.SecretIamMember(
        name, project=project, secret_id=secret.secret_id, role=ROLE_SECRET_VERSION_MANAGER, member=member, opts=opts
    )


def secret_resource_name(project: str, secret: gcp.secretmanager.Secret) -> pulumi.Output[str]:
    """projects/<project>/secrets/<id>: how the function names a secret it reads at run time."""
    return pulumi.Output.concat("projects/", project, "/secrets/", secret.secret_id)


def service_agent(name: str, project: str, service: str, opts: pulumi.ResourceOptions) -> gcp.projects.ServiceIdentity:
    """A Google-managed service agent (service-<number>@gcp-sa-<service>...), created now instead of
    lazily on first use, so its email can be granted a role in the same deployment."""
    return gcp.projects.ServiceIdentity(name, project=project, service=f"{service}.googleapis.com", opts=opts)


def grant_eventarc_agent(
    name: str, project: str, opts: pulumi.ResourceOptions
) -> tuple[gcp.projects.ServiceIdentity, gcp.projects.IAMMember]:
    """Create the Eventarc service agent now (it otherwise appears lazily) and give it its role, so the
    first Firestore trigger does not fail with "Permission denied while using the Eventarc Service Agent"."""
    agent = service_agent(name, project, "eventarc", opts)
    binding = grant_project_role(f"{name}-role", project, ROLE_EVENTARC_AGENT, service_account_member(agent.email), opts)
    return agent, binding


def grant_invoker_on_service(
    resource_name: str,
    project: str,
    location: str,
    service: pulumi.Input[str],
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> gcp.cloudrunv2.ServiceIamMember:
    """run.invoker on one Cloud Run service (the function's own), not on the project."""
    return gcp.cloudrunv2.ServiceIamMember(
        resource_name,
        project=project,
        location=location,
        name=service,
        role=ROLE_RUN_INVOKER,
        member=member,
        opts=opts,
    )


def grant_topic_publisher(
    name: str, project: str, topic: gcp.pubsub.Topic, member: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> gcp.pubsub.TopicIAMMember:
    """pubsub.publisher on one topic, not on the project."""
    return gcp.pubsub.TopicIAMMember(
        name, project=project, topic=topic.name, role=ROLE_PUBSUB_PUBLISHER, member=member, opts=opts
    )


def grant_push_token_creator(
    name: str, project: str, trigger_account: gcp.serviceaccount.Account, opts: pulumi.ResourceOptions
) -> tuple[gcp.projects.ServiceIdentity, gcp.serviceaccount.IAMMember]:
    """Let the Pub/Sub service agent mint the trigger account's OIDC tokens, on that one account.

    Eventarc delivers both triggers (Firestore events and the sweep's topic) through a Pub/Sub push
    subscription authenticated as the trigger account. Projects whose Pub/Sub service agent dates from
    before 8 April 2021 lack this permission, and every push then fails with nothing in the function's
    logs. Google's remedy grants the role on the whole project; this grants it on the one account."""
    agent = service_agent(f"{name}-pubsub-agent", project, "pubsub", opts)
    binding = gcp.serviceaccount.IAMMember(
        name,
        service_account_id=trigger_account.name,
        role=ROLE_TOKEN_CREATOR,
        member=service_account_member(agent.email),
        opts=opts,
    )
    return agent, binding

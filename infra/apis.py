"""The Google APIs the mailer needs, enabled in its project and left enabled on destroy."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

# cloudfunctions/run/cloudbuild/artifactregistry build and run the functions, eventarc and pubsub carry
# Firestore events and the sweep's messages to them, cloudscheduler starts the sweep, secretmanager holds
# the SMTP password, firestore is the data, and iam lets the program create the two service accounts.
REQUIRED_APIS: tuple[str, ...] = (
    "cloudfunctions",
    "run",
    "eventarc",
    "cloudbuild",
    "artifactregistry",
    "secretmanager",
    "firestore",
    "pubsub",
    "cloudscheduler",
    "iam",
)


def enable_apis(name: str, project: str, parent: pulumi.Resource) -> dict[str, gcp.projects.Service]:
    """One projects.Service per API, keyed by its short name (e.g. "eventarc").

    disable_on_destroy=False: other workloads in the project may rely on the same APIs, so a
    `pulumi destroy` of the mailer must not switch them off.
    """
    return {
        api: gcp.projects.Service(
            f"{name}-api-{api}",
            project=project,
            service=f"{api}.googleapis.com",
            disable_on_destroy=False,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for api in REQUIRED_APIS
    }

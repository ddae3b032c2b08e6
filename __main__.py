"""The mailer stack: validate the stack's config, build the EmailTrigger component, export outputs."""

from pathlib import Path

import pulumi

from infra.config import NAMESPACE, load_config
from infra.mailer import EmailTrigger, EmailTriggerArgs
from infra.source import collect_source
from infra.templates import load_templates, template_documents

FUNCTION_SOURCE = Path(__file__).resolve().parent / "functions"
TEMPLATES_FOLDER = Path(__file__).resolve().parent / "templates"

# Everything is checked before the first resource is declared, so a bad setting fails the preview.
config = load_config(pulumi.Config(NAMESPACE), pulumi.Config("gcp"))
source = collect_source(FUNCTION_SOURCE)
templates = load_templates(TEMPLATES_FOLDER) if config.settings.templates_collection else {}

mailer = EmailTrigger(
    "mailer",
    EmailTriggerArgs(
        settings=config.settings,
        smtp_password=config.smtp_password,
        source=source,
        smtp_uri_is_secret=config.smtp_uri_is_secret,
        oauth2_client_secret=config.oauth2_client_secret,
        oauth2_refresh_token=config.oauth2_refresh_token,
    ),
)

if config.settings.templates_collection:
    # templates/*.yaml as documents of the stack's templates collection, reviewed like the rest.
    template_documents(
        "mailer",
        templates,
        project=config.settings.project,
        database=config.settings.database,
        collection=config.settings.templates_collection,
        opts=pulumi.ResourceOptions(parent=mailer),
    )

pulumi.export("function_name", mailer.function_name)
pulumi.export("function_uri", mailer.function_uri)
pulumi.export("trigger_name", mailer.trigger_name)
pulumi.export("secret_id", mailer.secret_id)
pulumi.export("runtime_service_account", mailer.runtime_service_account)
pulumi.export("trigger_service_account", mailer.trigger_service_account)
pulumi.export("sweep_function_name", mailer.sweep_function_name)
pulumi.export("sweep_topic", mailer.sweep_topic)
pulumi.export("sweep_schedule", mailer.sweep_schedule)
pulumi.export("mail_collection", config.settings.mail_collection)
pulumi.export("database", config.settings.database)

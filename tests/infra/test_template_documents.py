"""templates/*.yaml deployed by __main__.py as gcp.firestore.Document resources (under Pulumi mocks)."""

from __future__ import annotations

import json
from pathlib import Path

from google.cloud.firestore_v1.types import Document
from google.protobuf import json_format

from infra.templates import document_json, load_templates
from mailer.firestore_values import decode_fields
from tests.infra.conftest import REPO_ROOT, TEST_PASSWORD, PulumiHarness, StackRun, stack_config, stack_name
from tests.infra.test_config import config_error, load

DOCUMENT = "gcp:firestore/document:Document"
TEMPLATES = REPO_ROOT / "templates"


def run_stack(harness: PulumiHarness, stack_file: Path, **overrides: str) -> StackRun:
    config = {**stack_config(stack_file), "mailer:smtpPassword": TEST_PASSWORD, **overrides}
    harness.install(stack_name(stack_file), config, ["mailer:smtpPassword"])
    return harness.run_main()


def as_function_reads_it(rest_fields: str) -> dict:
    """The REST JSON the provider sends, parsed as the Firestore API does (proto3 JSON), then decoded
    the way the function decodes documents."""
    document = json_format.Parse(json.dumps({"fields": json.loads(rest_fields)}), Document.pb()())
    return decode_fields(document.fields)


def test_each_template_file_becomes_a_document_of_the_stacks_templates_collection(
    pulumi_mocks: PulumiHarness, stack_file: Path
) -> None:
    run = run_stack(pulumi_mocks, stack_file, **{"mailer:templatesCollection": "tenants/acme/templates", "mailer:database": "mail-db"})
    expected = load_templates(TEMPLATES)
    documents = {r.inputs["documentId"]: r for r in run.of_type(DOCUMENT)}
    assert set(documents) == set(expected) >= {"Register", "SignIn", "ForgotPassword", "Generic"}
    component = run.one("mailer:index:EmailTrigger")
    project = stack_config(stack_file)["gcp:project"]
    for name, registration in documents.items():
        inputs = registration.inputs
        assert (inputs["collection"], inputs["database"], inputs["project"]) == ("tenants/acme/templates", "mail-db", project)
        assert registration.parent == component.urn
        assert as_function_reads_it(inputs["fields"]) == expected[name]
    # Sample data and descriptions are for review and tests; the function never sees them.
    assert all("data" not in as_function_reads_it(r.inputs["fields"]) for r in documents.values())
    assert as_function_reads_it(documents["footer"].inputs["fields"])["partial"] is True


def test_no_template_documents_without_a_templates_collection(pulumi_mocks: PulumiHarness, stack_file: Path) -> None:
    run = run_stack(pulumi_mocks, stack_file, **{"mailer:templatesCollection": ""})
    assert run.of_type(DOCUMENT) == []
    environment = run.function("process_mail").inputs["serviceConfig"]["environmentVariables"]
    assert "TEMPLATES_COLLECTION" not in environment and "TEMPLATE_CACHE_SECONDS" not in environment


def test_reordering_the_keys_of_a_file_changes_no_document(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "T.yaml").write_text(
        "subject: s\nhtml: h\ndata: {}\nattachments:\n  - filename: f.txt\n    content: c\n", encoding="utf-8"
    )
    (tmp_path / "b" / "T.yaml").write_text(
        "data: {}\nattachments:\n  - content: c\n    filename: f.txt\nhtml: h\nsubject: s\n", encoding="utf-8"
    )
    first, second = (document_json(load_templates(tmp_path / side)["T"]) for side in ("a", "b"))
    assert first == second


def test_the_cache_setting_reaches_the_function(pulumi_mocks: PulumiHarness, stack_file: Path) -> None:
    run = run_stack(pulumi_mocks, stack_file, **{"mailer:templatesCollection": "tpl", "mailer:templateCacheSeconds": "300"})
    environment = run.function("process_mail").inputs["serviceConfig"]["environmentVariables"]
    assert (environment["TEMPLATES_COLLECTION"], environment["TEMPLATE_CACHE_SECONDS"]) == ("tpl", "300")


def test_template_cache_seconds_is_checked(pulumi_mocks: PulumiHarness) -> None:
    assert load(pulumi_mocks, {}).settings.template_cache_seconds == 60
    assert load(pulumi_mocks, {"mailer:templateCacheSeconds": "0"}).settings.template_cache_seconds == 0
    message = config_error(pulumi_mocks, {"mailer:templateCacheSeconds": "-5"})
    assert message.startswith("mailer:templateCacheSeconds must be between 0 and 86400")

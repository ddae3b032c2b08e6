"""Each rule of the policy pack with a resource that passes and one that fails, declared with the real
pulumi_gcp classes and judged as the engine judges them (properties from the RegisterResource request,
deserialized and proxied as pulumi-policy's analyzer does)."""

from __future__ import annotations

import json
import runpy
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, _DictProxy, unknown_checking_proxy

from policy import rules
from review import engine
from review.harness import REPO_ROOT
from tests.policy.conftest import declare, violations

RUNTIME = "serviceAccount:mailer-runtime@p-test.iam.gserviceaccount.com"


def function(name: str = "fn", *, service: dict[str, Any] | None = None, env: dict[str, Any] | None = None,
             secret_env: list[dict[str, Any]] | None = None) -> gcp.cloudfunctionsv2.Function:
    """A 2nd-gen function shaped like the program's, with the service_config parts a test changes."""
    config: dict[str, Any] = {
        "ingress_settings": "ALLOW_INTERNAL_ONLY",
        "max_instance_count": 10,
        "environment_variables": env if env is not None else {"SMTP_CONNECTION_URI": "smtp://mailer@smtp.example.com:587"},
        "secret_environment_variables": secret_env or [],
    }
    config.update(service or {})
    return gcp.cloudfunctionsv2.Function(
        name,
        project="p-test",
        location="us-central1",
        name=name,
        build_config={"runtime": "python312", "entry_point": "process_mail"},
        service_config={key: value for key, value in config.items() if value is not None},
        event_trigger={"event_type": "google.cloud.firestore.document.v1.created", "trigger_region": "nam5"},
    )


# ----------------------------------------------------------------------- levels and the pack itself


def test_every_rule_sets_its_level_explicitly() -> None:
    levels = {policy.name: policy.enforcement_level for policy in rules.POLICIES}
    assert None not in levels.values()
    assert {name for name, level in levels.items() if level == EnforcementLevel.ADVISORY} == {
        "prod-mail-ttl-on", "prod-max-instances-bounded"
    }
    assert sum(level == EnforcementLevel.MANDATORY for level in levels.values()) == 7
    assert len(levels) == len(rules.POLICIES)  # names are unique


def test_the_pack_holds_exactly_the_rules_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """policy/__main__.py as the CLI runs it (a script, policy/ on sys.path), PolicyPack replaced by a
    recorder: the real one starts the analyzer server and blocks."""
    import pulumi_policy

    packs: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: packs.append(kwargs))
    monkeypatch.syspath_prepend(str(REPO_ROOT / "policy"))
    runpy.run_path(str(REPO_ROOT / "policy" / "__main__.py"), run_name="__main__")
    [pack] = packs
    assert pack["name"] == rules.PACK_NAME
    assert pack["enforcement_level"] == EnforcementLevel.MANDATORY
    assert [policy.name for policy in pack["policies"]] == [policy.name for policy in rules.POLICIES]


def test_rules_see_engine_shaped_properties() -> None:
    [registration] = declare(lambda: function(env={"SMTP_CONNECTION_URI": pulumi.Output.secret("smtp://u:pw@h:587")}))
    args = engine.resource_args(registration)
    assert isinstance(args.props, _DictProxy)
    # camelCase, as on the wire; secrets arrive unwrapped, as the analyzer deserializes them.
    assert args.props["serviceConfig"]["environmentVariables"]["SMTP_CONNECTION_URI"] == "smtp://u:pw@h:587"
    assert registration.raw["serviceConfig"]["environmentVariables"]["SMTP_CONNECTION_URI"]["value"] == "smtp://u:pw@h:587"


def test_an_unknown_value_does_not_break_a_rule() -> None:
    """During a real preview a computed member is unknown; the rule judges what is known."""
    props = unknown_checking_proxy({"role": "roles/run.invoker", "member": UNKNOWN_STRING_VALUE, "project": "p"})
    args = ResourceValidationArgs("gcp:projects/iAMMember:IAMMember", props, "urn:x", "x", None, None)  # type: ignore[arg-type]
    found: list[str] = []
    rules.INVOKER_SCOPED.validate(args, lambda message, urn=None: found.append(message))
    assert found == ["grants roles/run.invoker to (unknown until applied) project-wide: grant it on the function's own Cloud Run service"]


# ------------------------------------------------------------------------------------ IAM rules


def test_no_admin_grants_passes_a_narrow_role() -> None:
    registrations = declare(lambda: gcp.projects.IAMMember("ok", project="p", role="roles/datastore.user", member=RUNTIME))
    assert violations(rules.NO_ADMIN_GRANTS, registrations) == []


@pytest.mark.parametrize("declare_grant", [
    lambda: gcp.projects.IAMMember("g", project="p", role="roles/owner", member=RUNTIME),
    lambda: gcp.projects.IAMMember("g", project="p", role="roles/editor", member=RUNTIME),
    lambda: gcp.storage.BucketIAMMember("g", bucket="b", role="roles/storage.admin", member=RUNTIME),
    lambda: gcp.serviceaccount.IAMMember("g", service_account_id="projects/p/serviceAccounts/a@p.iam.gserviceaccount.com",
                                         role="roles/iam.serviceAccountAdmin", member=RUNTIME),
    lambda: gcp.projects.IAMBinding("g", project="p", role="roles/compute.instanceAdmin.v1", members=[RUNTIME]),
    lambda: gcp.projects.IAMPolicy("g", project="p", policy_data=json.dumps(
        {"bindings": [{"role": "roles/datastore.user", "members": [RUNTIME]}, {"role": "roles/owner", "members": [RUNTIME]}]})),
    lambda: gcp.secretmanager.SecretIamMember("g", secret_id="s", role="roles/secretmanager.admin", member=RUNTIME),
], ids=["owner", "editor", "storage-admin", "sa-admin", "binding-admin-v1", "policy-owner", "secret-admin"])
def test_no_admin_grants_fails_owner_editor_and_admin_roles(declare_grant: Any) -> None:
    found = violations(rules.NO_ADMIN_GRANTS, declare(declare_grant))
    assert len(found) == 1 and "owner, editor and *admin roles are never granted" in found[0]


def test_secret_accessor_on_the_secret_passes() -> None:
    registrations = declare(lambda: gcp.secretmanager.SecretIamMember(
        "ok", project="p", secret_id="mailer-smtp-password", role=rules.SECRET_ACCESSOR, member=RUNTIME))
    assert violations(rules.SECRET_ACCESSOR_ON_SECRET, registrations) == []


@pytest.mark.parametrize("declare_grant", [
    lambda: gcp.projects.IAMMember("g", project="p", role=rules.SECRET_ACCESSOR, member=RUNTIME),
    lambda: gcp.projects.IAMBinding("g", project="p", role=rules.SECRET_ACCESSOR, members=[RUNTIME]),
], ids=["project-member", "project-binding"])
def test_secret_accessor_project_wide_fails(declare_grant: Any) -> None:
    found = violations(rules.SECRET_ACCESSOR_ON_SECRET, declare(declare_grant))
    assert found == [f"grants {rules.SECRET_ACCESSOR} to {RUNTIME} project-wide: grant it on the one secret (secretmanager.SecretIamMember)"]


# Issue 11: the OAuth2 refresh token's rotation roles are held to the same scope: secretVersionManager
# (add the rotated token, destroy the version it replaced; it could destroy every secret's versions if
# granted wider) and secretVersionAdder (no longer granted, still limited).
VERSION_ROLES = pytest.mark.parametrize("role", [rules.SECRET_VERSION_MANAGER, rules.SECRET_VERSION_ADDER],
                                        ids=["secretVersionManager", "secretVersionAdder"])


@VERSION_ROLES
def test_secret_version_roles_on_the_secret_pass(role: str) -> None:
    registrations = declare(lambda: gcp.secretmanager.SecretIamMember(
        "ok", project="p", secret_id="mailer-oauth2-refresh-token", role=role, member=RUNTIME))
    assert violations(rules.SECRET_ACCESSOR_ON_SECRET, registrations) == []


@VERSION_ROLES
@pytest.mark.parametrize("declare_grant", [
    lambda role: gcp.projects.IAMMember("g", project="p", role=role, member=RUNTIME),
    lambda role: gcp.projects.IAMBinding("g", project="p", role=role, members=[RUNTIME]),
], ids=["project-member", "project-binding"])
def test_secret_version_roles_project_wide_fail(declare_grant: Any, role: str) -> None:
    found = violations(rules.SECRET_ACCESSOR_ON_SECRET, declare(lambda: declare_grant(role)))
    assert found == [f"grants {role} to {RUNTIME} project-wide: grant it on the one secret (secretmanager.SecretIamMember)"]


def test_secret_version_manager_on_another_resource_fails() -> None:
    """Not on the project, and not on anything else that is not the secret (a service account here)."""
    found = violations(rules.SECRET_ACCESSOR_ON_SECRET, declare(lambda: gcp.serviceaccount.IAMMember(
        "g", service_account_id="projects/p/serviceAccounts/x@p.iam.gserviceaccount.com",
        role=rules.SECRET_VERSION_MANAGER, member=RUNTIME)))
    assert len(found) == 1 and found[0].startswith(f"grants {rules.SECRET_VERSION_MANAGER} to {RUNTIME} on a ")


def test_secret_version_manager_is_not_an_admin_role() -> None:
    registrations = declare(lambda: gcp.secretmanager.SecretIamMember(
        "ok", project="p", secret_id="mailer-oauth2-refresh-token", role=rules.SECRET_VERSION_MANAGER, member=RUNTIME))
    assert violations(rules.NO_ADMIN_GRANTS, registrations) == []


def test_invoker_on_one_service_for_an_account_passes() -> None:
    registrations = declare(lambda: gcp.cloudrunv2.ServiceIamMember(
        "ok", project="p", location="us-central1", name="projects/p/locations/us-central1/services/fn",
        role="roles/run.invoker", member=RUNTIME))
    assert violations(rules.INVOKER_SCOPED, registrations) == []


@pytest.mark.parametrize(("declare_grant", "expected"), [
    (lambda: gcp.cloudrunv2.ServiceIamMember("g", location="us-central1", name="fn", role="roles/run.invoker", member="allUsers"),
     "never by the public"),
    (lambda: gcp.cloudrunv2.ServiceIamBinding("g", location="us-central1", name="fn", role="roles/run.invoker",
                                              members=[RUNTIME, "allAuthenticatedUsers"]),
     "never by the public"),
    (lambda: gcp.projects.IAMMember("g", project="p", role="roles/run.invoker", member=RUNTIME), "project-wide"),
], ids=["allUsers", "allAuthenticatedUsers-binding", "project-wide"])
def test_invoker_public_or_project_wide_fails(declare_grant: Any, expected: str) -> None:
    found = violations(rules.INVOKER_SCOPED, declare(declare_grant))
    assert len(found) == 1 and expected in found[0]


# ------------------------------------------------------------------------------- function rules


def test_internal_only_ingress_passes() -> None:
    assert violations(rules.INGRESS_INTERNAL, declare(lambda: function())) == []


@pytest.mark.parametrize("ingress", ["ALLOW_ALL", "ALLOW_INTERNAL_AND_GCLB", None])
def test_other_or_unset_ingress_fails(ingress: str | None) -> None:
    found = violations(rules.INGRESS_INTERNAL, declare(lambda: function(service={"ingress_settings": ingress})))
    assert found == [f"ingress is {ingress or 'unset (ALLOW_ALL)'}: set ALLOW_INTERNAL_ONLY, which still admits Eventarc and Pub/Sub"]


def test_password_through_secret_environment_passes() -> None:
    registrations = declare(lambda: function(
        env={"SMTP_CONNECTION_URI": "smtps://mailer@smtp.example.com:465", "DEFAULT_FROM": "a@example.com"},
        secret_env=[{"key": "SMTP_PASSWORD", "project_id": "p", "secret": "mailer-smtp-password", "version": "1"}],
    ))
    assert violations(rules.NO_PLAIN_CREDENTIALS, registrations) == []


@pytest.mark.parametrize(("env", "expected"), [
    ({"SMTP_PASSWORD": "hunter2"}, "SMTP_PASSWORD is a plain-text variable named like a credential"),
    ({"API_TOKEN": "t"}, "API_TOKEN is a plain-text variable named like a credential"),
    ({"SENDGRID_API_KEY": "k"}, "SENDGRID_API_KEY is a plain-text variable named like a credential"),
    ({"SMTP_CONNECTION_URI": "smtp://mailer:hunter2@smtp.example.com:587"}, "a URI with a password in its userinfo"),
    # Marked secret in Pulumi state, but still readable in the function's configuration.
    ({"SMTP_CONNECTION_URI": pulumi.Output.secret("smtps://mailer:hunter2@smtp.example.com:465")}, "a URI with a password in its userinfo"),
    ({"WEBHOOK": "https://hooks.example.com/x?token=abc"}, "a password or token in its query string"),
], ids=["password-name", "token-name", "api-key-name", "uri-userinfo", "secret-output-uri", "query-token"])
def test_credentials_in_plain_environment_fail(env: dict[str, Any], expected: str) -> None:
    found = violations(rules.NO_PLAIN_CREDENTIALS, declare(lambda: function(env=env)))
    assert len(found) == 1 and expected in found[0] and "secret_environment_variables" in found[0]


# Issue 11: NAME_SECRET variables name the Secret Manager secret the function reads NAME from at run time.
def test_secret_references_in_plain_environment_pass() -> None:
    env = {
        "SMTP_CONNECTION_URI": "smtp://a%40acme.example@smtp.office365.com:587?authMethod=XOAUTH2&oauth2TokenUrl="
                               "https%3A%2F%2Flogin.microsoftonline.com%2Facme%2Foauth2%2Fv2.0%2Ftoken&oauth2ClientId=c1",
        "SMTP_PASSWORD_SECRET": "projects/p-test/secrets/mailer-smtp-password",
        "SMTP_OAUTH2_CLIENT_SECRET_SECRET": "projects/p-test/secrets/mailer-oauth2-client-secret",
        "SMTP_OAUTH2_REFRESH_TOKEN_SECRET": "projects/p-test/secrets/mailer-oauth2-refresh-token",
    }
    assert violations(rules.NO_PLAIN_CREDENTIALS, declare(lambda: function(env=env))) == []


@pytest.mark.parametrize(("env", "expected"), [
    ({"SMTP_PASSWORD_SECRET": "hunter2"}, "SMTP_PASSWORD_SECRET must hold a Secret Manager secret name"),
    ({"SMTP_OAUTH2_REFRESH_TOKEN_SECRET": "projects/p/secrets/t/versions/3"}, "SMTP_OAUTH2_REFRESH_TOKEN_SECRET must hold"),
    # The pinned variable (a value, for local runs) stays a credential by its name.
    ({"SMTP_OAUTH2_CLIENT_SECRET": "projects/p/secrets/s"}, "SMTP_OAUTH2_CLIENT_SECRET is a plain-text variable named like a credential"),
    ({"SMTP_OAUTH2_REFRESH_TOKEN": "1//0g-refresh"}, "SMTP_OAUTH2_REFRESH_TOKEN is a plain-text variable named like a credential"),
], ids=["reference-holding-a-value", "reference-to-a-version", "pinned-client-secret", "pinned-refresh-token"])
def test_secret_values_behind_reference_names_fail(env: dict[str, Any], expected: str) -> None:
    found = violations(rules.NO_PLAIN_CREDENTIALS, declare(lambda: function(env=env)))
    assert len(found) == 1 and expected in found[0], found


def test_the_program_with_xoauth2_and_runtime_secrets_passes_every_rule() -> None:
    """EmailTrigger itself (Microsoft 365 over XOAUTH2; a SendGrid stack reading its password at run time)
    judged by the whole pack: the new variables and grants pass every rule."""
    from infra.config import MailerSettings
    from infra.mailer import EmailTrigger, EmailTriggerArgs
    from infra.source import collect_source

    base = {"gcp:project": "acme-mailer-unit", "mailer:region": "europe-west3", "mailer:firestoreLocation": "europe-west3",
            "mailer:defaultFrom": "noreply@acme.example"}
    stacks = [
        ({"mailer:smtpProvider": "microsoft365", "mailer:smtpUser": "noreply@acme.example", "mailer:oauth2ClientId": "c1",
          "mailer:oauth2TokenUrl": "https://login.microsoftonline.com/acme.example/oauth2/v2.0/token"},
         {"smtp_password": None, "oauth2_client_secret": "cs-1", "oauth2_refresh_token": "rt-1"}),
        ({"mailer:smtpProvider": "sendgrid", "mailer:smtpSecretsAtRuntime": "true"}, {"smtp_password": "SG.key"}),
    ]
    source = collect_source(REPO_ROOT / "functions")
    for overrides, secrets in stacks:
        settings = MailerSettings.model_validate({**base, **overrides})
        registrations = declare(lambda: EmailTrigger("unit", EmailTriggerArgs(settings=settings, source=source, **secrets)))
        results = engine.check(registrations, rules.POLICIES)
        assert [(r.policy.name, v.message) for r in results for v in r.violations] == [], overrides


@pytest.mark.parametrize("uri", ["smtp://mailer@smtp.example.com:587", "smtps://mailer@smtp.example.com:465", "smtp://mailer@smtp.example.com"])
def test_submission_ports_pass(uri: str) -> None:
    assert violations(rules.NO_PORT_25, declare(lambda: function(env={"SMTP_CONNECTION_URI": uri}))) == []


def test_smtp_port_25_fails() -> None:
    found = violations(rules.NO_PORT_25, declare(lambda: function(env={"SMTP_CONNECTION_URI": "smtp://mailer@smtp.example.com:25"})))
    assert len(found) == 1 and "SMTP_CONNECTION_URI uses port 25" in found[0]


# --------------------------------------------------------------------------------- bucket rules


def test_private_bucket_and_account_member_pass() -> None:
    def build() -> None:
        gcp.storage.Bucket("b", location="us-central1", uniform_bucket_level_access=True, public_access_prevention="enforced")
        gcp.storage.BucketIAMMember("m", bucket="b", role="roles/storage.objectViewer", member=RUNTIME)

    assert violations(rules.BUCKETS_PRIVATE, declare(build)) == []


@pytest.mark.parametrize(("declare_bucket", "expected"), [
    (lambda: gcp.storage.Bucket("b", location="us-central1", uniform_bucket_level_access=True), "publicAccessPrevention is unset"),
    (lambda: gcp.storage.Bucket("b", location="us-central1", uniform_bucket_level_access=True, public_access_prevention="inherited"),
     "publicAccessPrevention is inherited"),
    (lambda: gcp.storage.Bucket("b", location="us-central1", public_access_prevention="enforced"), "uniformBucketLevelAccess is not true"),
    (lambda: gcp.storage.BucketIAMMember("m", bucket="b", role="roles/storage.objectViewer", member="allUsers"), "must never be public"),
    (lambda: gcp.storage.BucketIAMBinding("m", bucket="b", role="roles/storage.objectViewer", members=["allAuthenticatedUsers"]),
     "must never be public"),
    (lambda: gcp.storage.BucketAccessControl("a", bucket="b", entity="allUsers", role="READER"), "must never be public"),
], ids=["no-pap", "pap-inherited", "not-uniform", "iam-allUsers", "binding-allAuthenticatedUsers", "acl-allUsers"])
def test_public_or_loose_bucket_fails(declare_bucket: Any, expected: str) -> None:
    found = violations(rules.BUCKETS_PRIVATE, declare(declare_bucket))
    assert len(found) == 1 and expected in found[0]


# ------------------------------------------------------------------------- advisory prod rules


def ttl_policy() -> None:
    gcp.firestore.Field("ttl", collection="mail", field="delivery.expireAt", ttl_config={}, index_config={})


def test_prod_with_ttl_passes() -> None:
    assert violations(rules.PROD_TTL, declare(lambda: (function(), ttl_policy()), stack="prod")) == []


def test_prod_without_ttl_fails() -> None:
    found = violations(rules.PROD_TTL, declare(lambda: function(), stack="prod"))
    assert len(found) == 1 and "no Firestore TTL policy" in found[0]
    [result] = engine.check(declare(lambda: function(), stack="prod"), [rules.PROD_TTL])
    assert result.level == EnforcementLevel.ADVISORY and not result.blocking and result.violations[0].urn is None


def test_ttl_is_not_asked_of_other_stacks() -> None:
    assert violations(rules.PROD_TTL, declare(lambda: function(), stack="dev")) == []


def test_prod_bounded_max_instances_passes() -> None:
    registrations = declare(lambda: function(service={"max_instance_count": rules.PROD_MAX_INSTANCES}), stack="prod")
    assert violations(rules.PROD_MAX_INSTANCES_BOUNDED, registrations) == []


@pytest.mark.parametrize(("count", "expected"), [(500, "max instances is 500, above 100"), (None, "max instances is not set")])
def test_prod_unbounded_max_instances_fails(count: int | None, expected: str) -> None:
    registrations = declare(lambda: function("big", service={"max_instance_count": count}), stack="prod")
    [result] = engine.check(registrations, [rules.PROD_MAX_INSTANCES_BOUNDED])
    assert [v.message.startswith(expected) for v in result.violations] == [True]
    assert result.violations[0].urn == registrations[0].urn and not result.blocking


def test_max_instances_are_not_bounded_outside_prod() -> None:
    registrations = declare(lambda: function(service={"max_instance_count": 500}), stack="dev")
    assert violations(rules.PROD_MAX_INSTANCES_BOUNDED, registrations) == []


def test_the_pack_starts_as_the_cli_starts_it(tmp_path: Path) -> None:
    """The language host runs `python -m pulumi.policy <engine> <pack dir>`; the pack then prints the
    port of its analyzer server and waits for the engine. No engine here: read the port, stop it."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(REPO_ROOT / "policy")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        first_line = process.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]
        assert first_line.isdigit(), (first_line, process.poll())
    finally:
        process.terminate()
        process.wait(timeout=10)

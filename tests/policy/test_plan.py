"""The offline plan: every stack passes the pack, the text is stable and shows what a reviewer needs,
plan-check fails (with a diff) when the program or a stack's config changes, and the plan exits
non-zero, naming rule and resource, on a mandatory violation."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from pulumi_policy import EnforcementLevel

from infra.source import collect_source
from review import plan as review_plan
from review.harness import REPO_ROOT, STACK_FILES, stack_name

STACK_IDS = [stack_name(path) for path in STACK_FILES]


@pytest.fixture(scope="module")
def plans() -> dict[str, review_plan.Plan]:
    return {stack_name(path): review_plan.make_plan(path) for path in STACK_FILES}


def copy_stacks(tmp_path: Path) -> Path:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    for path in STACK_FILES:
        shutil.copy(path, stacks / path.name)
    return stacks


def test_there_is_a_snapshot_per_stack_and_no_other() -> None:
    assert sorted(path.stem for path in review_plan.PLANS_DIR.glob("*.txt")) == sorted(STACK_IDS)
    assert {"dev", "prod"} <= set(STACK_IDS)


@pytest.mark.parametrize("stack", STACK_IDS)
def test_every_stack_passes_the_pack(plans: dict[str, review_plan.Plan], stack: str) -> None:
    plan = plans[stack]
    assert [r.policy.name for r in plan.results] == [p.name for p in review_plan.POLICIES]
    failing = {r.policy.name: [v.message for v in r.violations] for r in plan.results
               if r.violations and r.level == EnforcementLevel.MANDATORY}
    assert failing == {}
    assert all(not r.cannot_run for r in plan.results)
    if stack == "prod":  # the advisory rules apply to prod, and prod meets them too
        assert [r.policy.name for r in plan.results if r.violations] == []


@pytest.mark.parametrize("stack", STACK_IDS)
def test_plan_matches_its_snapshot_and_is_stable(plans: dict[str, review_plan.Plan], stack: str) -> None:
    again = review_plan.make_plan(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    assert again.text == plans[stack].text
    assert review_plan.snapshot_path(stack).read_text() == plans[stack].text


def test_plan_shows_what_a_reviewer_needs(plans: dict[str, review_plan.Plan]) -> None:
    text = plans["prod"].text
    for expected in (
        "## IAM grants (8), each also under its resource below",
        "roles/secretmanager.secretAccessor -> serviceAccount:mailer-runtime@acme-mailer-prod.iam.gserviceaccount.com\n"
        "    on secret mailer-smtp-password, by mailer-runtime-secret",
        "mailer-function: gcp:cloudfunctionsv2/function:Function under mailer",
        "mailer-sweep-job: gcp:cloudscheduler/job:Job under mailer-sweep",
        "grant: roles/secretmanager.secretAccessor -> serviceAccount:mailer-runtime@acme-mailer-prod.iam.gserviceaccount.com",
        "on: secret mailer-smtp-password",
        "on: project acme-mailer-prod (project-wide)",
        "on: Cloud Run service projects/acme-mailer-prod/locations/us-central1/services/mailer-send-mail in us-central1",
        "trigger: google.cloud.firestore.document.v1.created in nam5",
        "filter: document = mail/{docId} (match-path-pattern)",
        "ingress: ALLOW_INTERNAL_ONLY",
        "scaling: min 1 max 20 instances, concurrency 8, cpu 1, memory 512Mi, timeout 120s",
        "SMTP_CONNECTION_URI=smtps://mailer@smtp.example.com:465",
        "SMTP_PASSWORD <- secret mailer-smtp-password version 1 (project acme-mailer-prod)",
        "data: [secret]",
        "fields: delivery.state ASCENDING, delivery.nextAttemptTime ASCENDING",
        "schedule: * * * * * (Etc/UTC)",
        "topic: mailer-sweep in acme-mailer-prod",
        "TTL: on, single-field indexes off",
        "pass [mandatory] function-ingress-internal-only",
        "Result: 0 mandatory violation(s), 0 advisory.",
    ):
        assert expected in text, expected


@pytest.mark.parametrize("stack", STACK_IDS)
def test_no_secret_and_no_source_hash_in_the_plan(plans: dict[str, review_plan.Plan], stack: str) -> None:
    text = plans[stack].text
    assert review_plan.PLACEHOLDER_PASSWORD not in text
    digest = collect_source(REPO_ROOT / "functions").digest
    assert digest[:12] not in text
    assert review_plan.ARCHIVE_NAME in text


def test_plan_check_passes_on_the_committed_snapshots_of_copied_stacks(tmp_path: Path) -> None:
    out = io.StringIO()
    assert review_plan.check(copy_stacks(tmp_path), review_plan.PLANS_DIR, out) == 0, out.getvalue()


def test_plan_check_fails_with_a_diff_when_a_stack_config_changes(tmp_path: Path) -> None:
    stacks = copy_stacks(tmp_path)
    prod = stacks / "Pulumi.prod.yaml"
    prod.write_text(prod.read_text().replace("mailer:maxInstances: 20", "mailer:maxInstances: 40"))
    out = io.StringIO()
    assert review_plan.check(stacks, review_plan.PLANS_DIR, out) == 1
    report = out.getvalue()
    assert "plan of stack prod differs from its snapshot" in report
    assert "-      scaling: min 1 max 20 instances" in report and "+      scaling: min 1 max 40 instances" in report
    assert "plan of stack dev differs" not in report
    assert "make plan-update" in report


def test_plan_check_fails_when_the_program_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.sweep

    monkeypatch.setattr(infra.sweep, "TIME_ZONE", "Europe/Paris")
    out = io.StringIO()
    assert review_plan.check(copy_stacks(tmp_path), review_plan.PLANS_DIR, out) == 1
    assert "+        schedule: * * * * * (Europe/Paris)" in out.getvalue()


def test_plan_check_fails_on_a_missing_or_stale_snapshot(tmp_path: Path) -> None:
    stacks = copy_stacks(tmp_path)
    (stacks / "Pulumi.prod.yaml").rename(stacks / "Pulumi.staging.yaml")
    out = io.StringIO()
    assert review_plan.check(stacks, review_plan.PLANS_DIR, out) == 1
    assert "plan of stack staging differs from its snapshot (no snapshot yet)" in out.getvalue()
    assert "snapshot prod.txt has no stack file stacks/Pulumi.prod.yaml" in out.getvalue()


def test_plan_update_writes_what_check_then_accepts(tmp_path: Path) -> None:
    stacks, plans_dir = copy_stacks(tmp_path), tmp_path / "plans"
    dev = stacks / "Pulumi.dev.yaml"
    dev.write_text(dev.read_text().replace("mailer:maxInstances: 3", "mailer:maxInstances: 4"))
    (plans_dir).mkdir()
    (plans_dir / "gone.txt").write_text("old")
    assert review_plan.update(stacks, plans_dir, io.StringIO()) == 0
    assert sorted(p.name for p in plans_dir.iterdir()) == sorted(f"{s}.txt" for s in STACK_IDS)
    assert "max 4 instances" in (plans_dir / "dev.txt").read_text()
    assert review_plan.check(stacks, plans_dir, io.StringIO()) == 0


def test_mandatory_violation_exits_non_zero_naming_rule_and_resource(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import infra.mailer

    monkeypatch.setattr(infra.mailer, "INGRESS", "ALLOW_ALL")
    assert review_plan.main(["--stack", "dev"]) == 1
    captured = capsys.readouterr()
    assert "FAIL [mandatory] function-ingress-internal-only" in captured.out
    assert "mailer-function (gcp:cloudfunctionsv2/function:Function): ingress is ALLOW_ALL" in captured.out
    assert "Result: 1 mandatory violation(s), 0 advisory." in captured.out
    assert captured.err.startswith(
        "stack dev: mandatory policy function-ingress-internal-only violated by "
        "mailer-function (gcp:cloudfunctionsv2/function:Function): ingress is ALLOW_ALL"
    )


def test_advisory_violation_is_reported_but_does_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = review_plan.make_plan(REPO_ROOT / "stacks" / "Pulumi.prod.yaml", {"mailer:ttlExpireType": "never"})
    assert plan.blocking == []
    assert "WARN [advisory] prod-mail-ttl-on" in plan.text
    assert "    the stack: no Firestore TTL policy" in plan.text


def test_help_and_unknown_stack(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as help_exit:
        review_plan.main(["--help"])
    assert help_exit.value.code == 0 and "offline plan" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad_exit:
        review_plan.main(["--stack", "nope"])
    assert bad_exit.value.code == 2 and "stacks: dev, local, prod" in capsys.readouterr().err


def test_nothing_imports_the_pack_entry_point() -> None:
    """Constructing PolicyPack blocks: the plan and the rules must never import policy/__main__.py."""
    import ast

    for path in [*sorted((REPO_ROOT / "review").glob("*.py")), REPO_ROOT / "policy" / "rules.py", REPO_ROOT / "policy" / "__init__.py"]:
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {f"{node.module}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any(name.endswith("__main__") for name in names), path


XOAUTH2_STACK = """config:
  gcp:project: acme-mailer-oauth
  mailer:region: europe-west1
  mailer:firestoreLocation: eur3
  mailer:defaultFrom: "Acme <noreply@acme.example>"
  mailer:smtpProvider: microsoft365
  mailer:smtpUser: noreply@acme.example
  mailer:oauth2TokenUrl: https://login.microsoftonline.com/acme.example/oauth2/v2.0/token
  mailer:oauth2ClientId: 3f1c-client
  mailer:oauth2ClientSecret:
    secure: v1:AAAAclientsecret
  mailer:oauth2RefreshToken:
    secure: v1:AAAArefreshtoken
"""


def test_an_xoauth2_stack_is_planned_with_oauth2_placeholders_and_no_password(tmp_path: Path) -> None:
    """The plan stands in for the secrets the stack's authentication needs: for XOAUTH2 the OAuth2 client
    secret and refresh token (stored encrypted in the stack file, as `pulumi config set --secret` writes
    them), not an SMTP password the program refuses alongside XOAUTH2."""
    stack_file = tmp_path / "Pulumi.oauth.yaml"
    stack_file.write_text(XOAUTH2_STACK)
    plan = review_plan.make_plan(stack_file)
    assert plan.blocking == []
    assert "mailer:oauth2ClientSecret and mailer:oauth2RefreshToken are placeholders" in plan.text
    assert "roles/secretmanager.secretVersionManager" in plan.text and "SMTP_PASSWORD" not in plan.text
    assert "v1:AAAA" not in plan.text and review_plan.PLACEHOLDER_PASSWORD not in plan.text


def test_an_encrypted_password_in_the_stack_file_plans_as_without_it(tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text((REPO_ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
                          + "  mailer:smtpPassword:\n    secure: v1:AAAApassword\n")
    assert review_plan.make_plan(stack_file).text == review_plan.make_plan(REPO_ROOT / "stacks" / "Pulumi.dev.yaml").text


def test_a_stack_the_config_model_refuses_exits_2_with_its_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Pulumi.sg.yaml").write_text(XOAUTH2_STACK.replace("microsoft365", "sendgrid").split("  mailer:oauth2TokenUrl")[0])
    monkeypatch.setattr(review_plan, "STACKS_DIR", tmp_path)
    assert review_plan.main(["--stack", "sg"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("plan: stack sg: mailer:smtpUser must be the literal word apikey for SendGrid")

"""The offline plan: __main__.py for one stack under Pulumi's mock runtime (no CLI, no credentials),
printed as a reviewer reads it, then the policy pack's rules applied to what it declared.

    python -m review.plan --stack dev     print dev's plan; exit 1 on a mandatory policy violation
    python -m review.plan --check         every stack's plan against its snapshot in review/plans/
    python -m review.plan --update        rewrite the snapshots

What the text holds, and what it leaves out on purpose:
- every resource once, depth-first under its parent, siblings by name; a resource's key properties
  (IAM role, member and the resource it is granted on; trigger and filters; environment; scaling;
  ingress; indexes; schedule; topic). Secret values print as [secret]; the secrets the stack needs
  (the SMTP password, or with XOAUTH2 the OAuth2 client secret and refresh token) are fixed
  placeholders, never read from anywhere (an encrypted `secure:` value in the stack file is ignored).
- nothing that changes without a cause: no timestamps, and the mocked provider's ids and computed
  values are derived from the inputs. The source archive's object name is a content hash of
  functions/: it changes with every code change, so it prints as ``source-<content hash of functions/>.zip``
  and a code-only change leaves the plans alone (the function redeploys on it all the same).
  Template documents print their field names and size, not their JSON (templates/*.yaml is the diff
  to read for their wording).
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pulumi_policy import EnforcementLevel

from policy.rules import PACK_NAME, is_iam_type, iam_grants, POLICIES
from review import engine
from review.harness import (
    REPO_ROOT,
    SECRET_MARK,
    SECRET_SIG,
    STACKS_DIR,
    PulumiHarness,
    Registration,
    StackRun,
    stack_config,
    stack_name,
)

PLANS_DIR = REPO_ROOT / "review" / "plans"
PASSWORD_KEY = "mailer:smtpPassword"
# A fixed stand-in: the plan never needs the real password, only that it is a secret.
PLACEHOLDER_PASSWORD = "offline-plan-placeholder"
OAUTH2_KEYS = ("mailer:oauth2ClientSecret", "mailer:oauth2RefreshToken")
ALL_SECRET_KEYS = (PASSWORD_KEY, *OAUTH2_KEYS)
SECRET = "[secret]"
ARCHIVE_NAME = "source-<content hash of functions/>.zip"
UPDATE_COMMAND = "make plan-update"


# ------------------------------------------------------------------------------------- values


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARK


def plain(value: Any) -> Any:
    """The raw (JSON) property with secrets replaced by [secret] and whole floats as ints."""
    if is_secret(value):
        return SECRET
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(unset)"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def dig(props: Mapping[str, Any], *path: str) -> Any:
    value: Any = props
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


# ---------------------------------------------------------------------- per-type key properties

Lines = list[str]


def _grant_scope(resource_type: str, props: Mapping[str, Any]) -> str:
    module = resource_type.split(":")[1].split("/")[0]
    if module == "projects":
        return f"project {props.get('project')} (project-wide)"
    for key, label in (("secretId", "secret"), ("secret", "secret"), ("topic", "topic"),
                       ("subscription", "subscription"), ("serviceAccountId", "service account"),
                       ("bucket", "bucket"), ("name", "resource"), ("cloudFunction", "function")):
        if props.get(key):
            where = f" in {props['location']}" if props.get("location") else ""
            if module == "cloudrunv2" and key == "name":
                label = "Cloud Run service"
            return f"{label} {props[key]}{where}"
    return f"{module} (scope not recognised)"


def _iam(props: Mapping[str, Any], resource_type: str) -> Lines:
    grants = iam_grants(resource_type, props)
    scope = _grant_scope(resource_type, props)
    return [f"grant: {role} -> {member}" for role, member in grants] + [f"on: {scope}"]


def _service(props: Mapping[str, Any], _: str) -> Lines:
    kept = "left enabled on destroy" if props.get("disableOnDestroy") is False else "disabled on destroy"
    return [f"api: {props.get('service')} ({kept})"]


def _account(props: Mapping[str, Any], _: str) -> Lines:
    return [f"account: {props.get('accountId')} in {props.get('project')}", f"display name: {props.get('displayName')}"]


def _identity(props: Mapping[str, Any], _: str) -> Lines:
    return [f"service agent of: {props.get('service')} in {props.get('project')}"]


def _secret(props: Mapping[str, Any], _: str) -> Lines:
    return [f"secret: {props.get('secretId')} in {props.get('project')}", f"replication: {text(props.get('replication'))}"]


def _secret_version(props: Mapping[str, Any], _: str) -> Lines:
    return [f"secret: {props.get('secret')}", f"data: {text(props.get('secretData'))}"]


def _bucket(props: Mapping[str, Any], _: str) -> Lines:
    return [
        f"location: {props.get('location')}",
        f"public access prevention: {text(props.get('publicAccessPrevention'))}",
        f"uniform bucket-level access: {text(props.get('uniformBucketLevelAccess'))}",
        f"force destroy: {text(props.get('forceDestroy'))}",
    ]


def _bucket_object(props: Mapping[str, Any], _: str) -> Lines:
    name = props.get("name")
    shown = ARCHIVE_NAME if isinstance(name, str) and name.startswith("source-") else name
    return [f"object: {shown} in bucket {props.get('bucket')}", f"content type: {props.get('contentType')}"]


def _function(props: Mapping[str, Any], _: str) -> Lines:
    build = props.get("buildConfig") or {}
    service = props.get("serviceConfig") or {}
    trigger = props.get("eventTrigger") or {}
    storage = dig(build, "source", "storageSource") or {}
    obj = storage.get("object")
    obj = ARCHIVE_NAME if isinstance(obj, str) and obj.startswith("source-") else obj
    lines = [
        f"function: {props.get('name')} in {props.get('location')} (project {props.get('project')})",
        f"runtime: {build.get('runtime')}, entry point {build.get('entryPoint')}, source {storage.get('bucket')}/{obj}",
        f"runs as: {service.get('serviceAccountEmail')}",
        f"ingress: {text(service.get('ingressSettings'))}",
        "scaling: min {} max {} instances, concurrency {}, cpu {}, memory {}, timeout {}s".format(
            *(text(service.get(key)) for key in ("minInstanceCount", "maxInstanceCount", "maxInstanceRequestConcurrency",
                                                  "availableCpu", "availableMemory", "timeoutSeconds"))
        ),
    ]
    if trigger:
        lines.append(f"trigger: {trigger.get('eventType')} in {trigger.get('triggerRegion')}, {trigger.get('retryPolicy')}, "
                     f"delivered as {trigger.get('serviceAccountEmail')}")
        if trigger.get("pubsubTopic"):
            lines.append(f"  topic: {trigger['pubsubTopic']}")
        for item in trigger.get("eventFilters") or []:
            operator = f" ({item['operator']})" if item.get("operator") else ""
            lines.append(f"  filter: {item.get('attribute')} = {item.get('value')}{operator}")
    else:
        lines.append("trigger: none (HTTP)")
    environment = service.get("environmentVariables") or {}
    lines.append(f"environment ({len(environment)}):")
    lines += [f"  {name}={text(environment[name])}" for name in sorted(environment)]
    secret_env = service.get("secretEnvironmentVariables") or []
    lines.append(f"secret environment ({len(secret_env)}):")
    for item in sorted(secret_env, key=lambda entry: str(entry.get("key"))):
        lines.append(f"  {item.get('key')} <- secret {item.get('secret')} version {item.get('version')} (project {item.get('projectId')})")
    return lines


def _field(props: Mapping[str, Any], _: str) -> Lines:
    ttl = "on" if props.get("ttlConfig") is not None else "off"
    indexing = "single-field indexes off" if props.get("indexConfig") == {} else f"index config {text(props.get('indexConfig'))}"
    return [f"field: {props.get('collection')}.{props.get('field')} in database {props.get('database')}", f"TTL: {ttl}, {indexing}"]


def _index(props: Mapping[str, Any], _: str) -> Lines:
    fields = ", ".join(f"{f.get('fieldPath')} {f.get('order') or f.get('arrayConfig')}" for f in props.get("fields") or [])
    return [f"index: {props.get('collection')} ({props.get('queryScope')}) in database {props.get('database')}", f"fields: {fields}"]


def _topic(props: Mapping[str, Any], _: str) -> Lines:
    return [f"topic: {props.get('name')} in {props.get('project')}"]


def _job(props: Mapping[str, Any], _: str) -> Lines:
    target = props.get("pubsubTarget") or {}
    data = target.get("data")
    try:
        message = base64.b64decode(data).decode() if isinstance(data, str) else text(data)
    except ValueError:
        message = text(data)
    return [
        f"job: {props.get('name')} in {props.get('region')}",
        f"schedule: {props.get('schedule')} ({props.get('timeZone')})",
        f"publishes to: {target.get('topicName')}, message {message}",
    ]


def _document(props: Mapping[str, Any], _: str) -> Lines:
    fields = props.get("fields")
    try:
        names = ", ".join(sorted(json.loads(fields))) if isinstance(fields, str) else text(fields)
    except ValueError:
        names = "(not JSON)"
    size = len(fields.encode()) if isinstance(fields, str) else 0
    return [f"document: {props.get('collection')}/{props.get('documentId')} in database {props.get('database')}",
            f"fields: {names} ({size} bytes of JSON)"]


def _generic(props: Mapping[str, Any], _: str) -> Lines:
    return [f"{key}: {text(props[key])}" for key in sorted(props) if key != "labels"]


RENDERERS: dict[str, Callable[[Mapping[str, Any], str], Lines]] = {
    "gcp:projects/service:Service": _service,
    "gcp:serviceaccount/account:Account": _account,
    "gcp:projects/serviceIdentity:ServiceIdentity": _identity,
    "gcp:secretmanager/secret:Secret": _secret,
    "gcp:secretmanager/secretVersion:SecretVersion": _secret_version,
    "gcp:storage/bucket:Bucket": _bucket,
    "gcp:storage/bucketObject:BucketObject": _bucket_object,
    "gcp:cloudfunctionsv2/function:Function": _function,
    "gcp:firestore/field:Field": _field,
    "gcp:firestore/index:Index": _index,
    "gcp:pubsub/topic:Topic": _topic,
    "gcp:cloudscheduler/job:Job": _job,
    "gcp:firestore/document:Document": _document,
}


def key_properties(registration: Registration) -> Lines:
    props = plain(registration.raw)
    if registration.type.startswith("mailer:"):
        return []  # a component: its children below are the resources
    if is_iam_type(registration.type):
        return _iam(props, registration.type)
    return RENDERERS.get(registration.type, _generic)(props, registration.type)


# ---------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    stack: str
    text: str
    results: list[engine.PolicyResult]
    names: dict[str, str]  # urn -> "name (type)"

    @property
    def blocking(self) -> list[engine.PolicyResult]:
        return [result for result in self.results if result.blocking]


def _ordered(registrations: Sequence[Registration]) -> list[tuple[int, Registration]]:
    """Depth-first from the roots, siblings by (name, type): the same order whatever order the SDK
    happened to register them in."""
    urns = {r.urn for r in registrations}
    children: dict[str, list[Registration]] = {}
    for registration in registrations:
        parent = registration.parent if registration.parent in urns else ""
        children.setdefault(parent, []).append(registration)
    ordered: list[tuple[int, Registration]] = []

    def walk(parent: str, depth: int) -> None:
        for child in sorted(children.get(parent, []), key=lambda r: (r.name, r.type)):
            ordered.append((depth, child))
            walk(child.urn, depth + 1)

    walk("", 0)
    return ordered


def _name_of(run: StackRun, urn: Optional[str]) -> str:
    if not urn:
        return "the stack"
    found = next((r for r in run.registrations if r.urn == urn), None)
    return f"{found.name} ({found.type})" if found else urn


def render(stack: str, run: StackRun, results: Sequence[engine.PolicyResult],
           placeholders: Sequence[str] = (PASSWORD_KEY,)) -> str:
    by_urn = {r.urn: r for r in run.registrations}
    lines = [
        f"# Offline plan of stack {stack}: `make plan STACK={stack}`. Pulumi program under mocks (no CLI, no credentials);",
        f"# {' and '.join(placeholders)} {'is a placeholder' if len(placeholders) == 1 else 'are placeholders'}, "
        f"shown as {SECRET}. The source archive's content hash is left out.",
    ]
    grants = sorted(
        (role, member, _grant_scope(r.type, plain(r.raw)), r.name)
        for r in run.registrations if is_iam_type(r.type)
        for role, member in iam_grants(r.type, plain(r.raw))
    )
    lines += ["", f"## IAM grants ({len(grants)}), each also under its resource below", ""]
    lines += [f"{role} -> {member}\n    on {scope}, by {name}" for role, member, scope, name in grants]
    lines += ["", f"## Resources ({len(run.registrations)})"]
    for depth, registration in _ordered(run.registrations):
        parent = by_urn.get(registration.parent)
        under = f" under {parent.name}" if parent else ""
        indent = "  " * depth
        lines.append("")
        lines.append(f"{indent}{registration.name}: {registration.type}{under}")
        lines += [f"{indent}    {line}" for line in key_properties(registration)]
    lines += ["", f"## Outputs ({len(run.exports)})", ""]
    exports = plain(run.exports)
    lines += [f"{name}: {text(exports[name])}" for name in sorted(exports)]

    failed = sum(1 for result in results if result.violations)
    lines += ["", f"## Policies (pack {PACK_NAME}: {len(results)} rules, {failed} with violations)", ""]
    for result in results:
        level = result.level.value
        if result.violations:
            status = "FAIL" if result.level == EnforcementLevel.MANDATORY else "WARN"
        else:
            status = "pass"
        lines.append(f"{status} [{level}] {result.policy.name}: {result.policy.description}")
        for violation in result.violations:
            lines.append(f"    {_name_of(run, violation.urn)}: {violation.message}")
        for reason in result.cannot_run:
            lines.append(f"    could not run: {reason}")
    blocking = sum(len(result.violations) for result in results if result.blocking)
    advisory = sum(len(result.violations) for result in results if result.violations and not result.blocking)
    lines += ["", f"Result: {blocking} mandatory violation(s), {advisory} advisory."]
    return "\n".join(lines) + "\n"


def stack_files(stacks_dir: Path = STACKS_DIR) -> list[Path]:
    return sorted(stacks_dir.glob("Pulumi.*.yaml"))


def secret_keys(config: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets the stack's authentication method needs (the program refuses the others): the SMTP
    password, or with XOAUTH2 (mailer:smtpAuthMethod, the URI's authMethod, the microsoft365 preset's
    default) the OAuth2 client secret and refresh token."""
    from infra.config import settings_problems

    settings, _ = settings_problems(config)
    if settings is not None:
        xoauth2 = settings.uses_xoauth2
    else:  # (an invalid stack fails in the program with its own errors; this only picks placeholders)
        method = (config.get("mailer:smtpAuthMethod") or "").strip().upper()
        xoauth2 = method == "XOAUTH2" or (not method and (config.get("mailer:smtpProvider") or "").strip() == "microsoft365")
    return OAUTH2_KEYS if xoauth2 else (PASSWORD_KEY,)


def plan_config(stack_file: Path, overrides: Optional[Mapping[str, str]] = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """The stack's config with a placeholder for each secret it needs, and those keys. A value stored
    encrypted (`secure: v1:...`, what `pulumi config set --secret` writes) only the CLI can read: it is
    dropped, and the placeholder stands in for it."""
    config = {key: value for key, value in {**stack_config(stack_file), **(overrides or {})}.items()
              if key not in ALL_SECRET_KEYS and not _encrypted(value)}
    keys = secret_keys(config)
    return {**config, **{key: PLACEHOLDER_PASSWORD for key in keys}}, keys


def _encrypted(value: str) -> bool:
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    return isinstance(parsed, dict) and set(parsed) == {"secure"}


def make_plan(stack_file: Path, overrides: Optional[Mapping[str, str]] = None) -> Plan:
    """Run __main__.py for the stack file under the mocks and apply the policies to what it registered."""
    stack = stack_name(stack_file)
    harness = PulumiHarness()
    config, keys = plan_config(stack_file, overrides)
    harness.install(stack, config, list(keys))
    run = harness.run_main()
    results = engine.check(run.registrations, POLICIES)
    names = {r.urn: f"{r.name} ({r.type})" for r in run.registrations}
    return Plan(stack, render(stack, run, results, keys), results, names)


def blocking_messages(plan: Plan) -> list[str]:
    return [
        f"stack {plan.stack}: mandatory policy {result.policy.name} violated by {_violator(plan, violation)}: {violation.message}"
        for result in plan.blocking
        for violation in result.violations
    ]


def _violator(plan: Plan, violation: engine.Violation) -> str:
    return plan.names.get(violation.urn, violation.urn) if violation.urn else "the stack"


def snapshot_path(stack: str, plans_dir: Path = PLANS_DIR) -> Path:
    return plans_dir / f"{stack}.txt"


def check(stacks_dir: Path = STACKS_DIR, plans_dir: Path = PLANS_DIR, out: Any = None) -> int:
    """0 when every stack's plan equals its snapshot, no snapshot is stale and nothing mandatory is
    violated; else 1, with a unified diff per stack and the command that updates them."""
    out = out or sys.stdout
    status = 0
    files = stack_files(stacks_dir)
    for stack_file in files:
        plan = make_plan(stack_file)
        path = snapshot_path(plan.stack, plans_dir)
        expected = path.read_text() if path.exists() else ""
        if expected != plan.text:
            status = 1
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True), plan.text.splitlines(keepends=True),
                fromfile=f"{path.relative_to(plans_dir.parent.parent) if path.is_relative_to(plans_dir.parent.parent) else path} (snapshot)",
                tofile=f"stack {plan.stack} (program now)",
            )
            out.write(f"plan of stack {plan.stack} differs from its snapshot{'' if path.exists() else ' (no snapshot yet)'}:\n")
            out.writelines(diff)
            out.write("\n")
        for message in blocking_messages(plan):
            status = 1
            out.write(message + "\n")
    stacks = {stack_name(f) for f in files}
    for stale in sorted(plans_dir.glob("*.txt")):
        if stale.stem not in stacks:
            status = 1
            out.write(f"snapshot {stale.name} has no stack file {stacks_dir.name}/Pulumi.{stale.stem}.yaml\n")
    if status:
        out.write(f"If these changes are intended, run `{UPDATE_COMMAND}` and commit review/plans/.\n")
    else:
        out.write(f"plans of {len(files)} stack(s) match their snapshots in review/plans/ and pass the mandatory policies\n")
    return status


def update(stacks_dir: Path = STACKS_DIR, plans_dir: Path = PLANS_DIR, out: Any = None) -> int:
    out = out or sys.stdout
    plans_dir.mkdir(parents=True, exist_ok=True)
    files = stack_files(stacks_dir)
    status = 0
    for stack_file in files:
        plan = make_plan(stack_file)
        path = snapshot_path(plan.stack, plans_dir)
        changed = not path.exists() or path.read_text() != plan.text
        path.write_text(plan.text)
        out.write(f"{'updated' if changed else 'unchanged'} {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}\n")
        for message in blocking_messages(plan):
            status = 1
            out.write(message + "\n")
    stacks = {stack_name(f) for f in files}
    for stale in sorted(plans_dir.glob("*.txt")):
        if stale.stem not in stacks:
            stale.unlink()
            out.write(f"removed {stale.name} (no such stack)\n")
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make plan",
        description="The offline plan: __main__.py under Pulumi's mock runtime (no CLI, no credentials, the SMTP "
                    "password a placeholder), each resource with its key properties, then the policy pack's results. "
                    "Exits 1 on a mandatory policy violation, 2 when the stack's settings are invalid.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--stack", help="the stack to plan, e.g. dev (stacks/Pulumi.<stack>.yaml)")
    mode.add_argument("--check", action="store_true", help="compare every stack's plan with review/plans/<stack>.txt (make plan-check)")
    mode.add_argument("--update", action="store_true", help="rewrite review/plans/<stack>.txt for every stack (make plan-update)")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    if args.update:
        return update()
    if not args.stack:
        known = ", ".join(stack_name(f) for f in stack_files())
        parser.error(f"name a stack: --stack NAME (make plan STACK=NAME); stacks: {known}")
    stack_file = STACKS_DIR / f"Pulumi.{args.stack}.yaml"
    if not stack_file.exists():
        known = ", ".join(stack_name(f) for f in stack_files())
        parser.error(f"no stack file {stack_file.relative_to(REPO_ROOT)}; stacks: {known}")
    from infra.config import ConfigError

    try:
        plan = make_plan(stack_file)
    except ConfigError as error:  # the stack's settings, one line naming each bad key (as `pulumi preview`)
        sys.stderr.write(f"plan: stack {args.stack}: {error}\n")
        return 2
    sys.stdout.write(plan.text)
    messages = blocking_messages(plan)
    for message in messages:
        sys.stderr.write(message + "\n")
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())

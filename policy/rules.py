"""The mailer's policies: one set of rules, applied by the policy pack (``policy/__main__.py``, run by
``pulumi preview --policy-pack policy``) and by the offline plan (``review/``), which builds the
validation arguments the way the engine does.

Each rule reads the resource's properties as the engine hands them over: camelCase names, secrets
already unwrapped to their values. Every level is set explicitly, because ``PolicyPack`` defaults to
advisory and a rule without a level would block nothing.

This module must import nothing but the standard library, pulumi and pulumi_policy: the pack runs it
from policy/ as a top-level module, the plan imports it as ``policy.rules``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY
PACK_NAME = "mailer-policy"
# The pack's level applies only to a policy that sets none; every policy below sets its own.
PACK_ENFORCEMENT = MANDATORY

PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
INVOKER_ROLES = frozenset({"roles/run.invoker", "roles/cloudfunctions.invoker"})
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
# Issue 11: the runtime account may add versions to the OAuth2 refresh token's secret (rotation) and
# destroy the version a rotation replaced: secretVersionManager (which also destroys, enables and disables
# versions). secretVersionAdder is no longer granted but stays held to the same scope. Every one of these
# roles is granted on one secret, never wider.
SECRET_VERSION_ADDER = "roles/secretmanager.secretVersionAdder"
SECRET_VERSION_MANAGER = "roles/secretmanager.secretVersionManager"
SECRET_ROLES = frozenset({SECRET_ACCESSOR, SECRET_VERSION_ADDER, SECRET_VERSION_MANAGER})
INTERNAL_ONLY = "ALLOW_INTERNAL_ONLY"
# The prod stack's sending rate and SMTP connections are capped by maxInstances; above this a typo
# (1000 for 10) would open a connection storm to the SMTP server. Raise it here, reviewed, if needed.
PROD_MAX_INSTANCES = 100
PROD_STACKS = frozenset({"prod"})
FORBIDDEN_PORT = 25
UNKNOWN = "(unknown until applied)"

FUNCTION_V2 = "gcp:cloudfunctionsv2/function:Function"
FUNCTION_V1 = "gcp:cloudfunctions/function:Function"
BUCKET = "gcp:storage/bucket:Bucket"
FIRESTORE_FIELD = "gcp:firestore/field:Field"

# Every pulumi-gcp grant type ends in IAMMember/IAMBinding/IAMPolicy, spelt Iam... in some modules
# (projects.IAMMember, secretmanager.SecretIamMember, cloudrunv2.ServiceIamMember,
# pubsub.TopicIAMMember, serviceaccount.IAMMember, storage.BucketIAMMember, ...).
_IAM_TYPE = re.compile(r":[A-Za-z0-9]*I[Aa][Mm](Member|Binding|Policy)$")
# Grants on these modules apply to everything in the project, folder or organization.
_WIDE_MODULES = frozenset({"projects", "organizations", "folder"})
_SECRET_GRANT = re.compile(r"^gcp:secretmanager/(regionalSecret|secret)I[Aa][Mm](Member|Binding|Policy):")
_BUCKET_ACL_TYPES = frozenset({
    "gcp:storage/bucketAccessControl:BucketAccessControl",
    "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
    "gcp:storage/objectAccessControl:ObjectAccessControl",
    "gcp:storage/bucketACL:BucketACL",
    "gcp:storage/defaultObjectACL:DefaultObjectACL",
    "gcp:storage/objectACL:ObjectACL",
})
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
_SECRET_QUERY_KEY = re.compile(r"pass(word)?|token|secret|api_?key", re.IGNORECASE)
# NAME_SECRET, where NAME is named like a credential (SMTP_PASSWORD_SECRET, SMTP_OAUTH2_REFRESH_TOKEN_SECRET),
# holds the resource name of the Secret Manager secret the function reads NAME from at run time: a
# reference, not a credential, when its value is exactly such a name.
_SECRET_REFERENCE_NAME = re.compile(r"^(?P<base>.+)_SECRET$")
_SECRET_RESOURCE = re.compile(r"^projects/[^/\s]+/secrets/[A-Za-z0-9_-]+$")


# ---------------------------------------------------------------------------------------- helpers


def _get(props: Mapping[str, Any], *path: str) -> Any:
    """props[path[0]][path[1]]..., None when missing. A value still unknown (computed, during a
    preview) also reads as None: a rule then judges what is known and lets the rest through, as the
    engine would only report "can't run policy during preview" otherwise."""
    value: Any = props
    try:
        for key in path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
    except UnknownValueError:
        return None
    return value


def _module(resource_type: str) -> str:
    """gcp:projects/iAMMember:IAMMember -> projects."""
    return resource_type.split(":")[1].split("/")[0] if resource_type.count(":") == 2 else ""


def is_iam_type(resource_type: str) -> bool:
    return resource_type.startswith("gcp:") and bool(_IAM_TYPE.search(resource_type))


def is_project_wide(resource_type: str) -> bool:
    return is_iam_type(resource_type) and _module(resource_type) in _WIDE_MODULES


def iam_grants(resource_type: str, props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, member) pairs an IAM resource grants: one for a member, one per member of a binding, and
    every binding of an authoritative policy (its policyData JSON)."""
    kind = _IAM_TYPE.search(resource_type)
    if not kind or not resource_type.startswith("gcp:"):
        return []
    if kind.group(1) == "Member":
        return [(str(_get(props, "role") or UNKNOWN), str(_get(props, "member") or UNKNOWN))]
    if kind.group(1) == "Binding":
        members = _get(props, "members") or []
        role = str(_get(props, "role") or UNKNOWN)
        known = []
        for index in range(len(members)):
            try:
                known.append((role, str(members[index])))
            except UnknownValueError:
                continue
        return known
    policy_data = _get(props, "policyData")
    if not isinstance(policy_data, str):
        return []
    try:
        bindings = json.loads(policy_data).get("bindings") or []
    except (ValueError, AttributeError):
        return []
    return [(str(b.get("role", "")), str(m)) for b in bindings if isinstance(b, dict) for m in b.get("members") or []]


def is_admin_role(role: str) -> bool:
    """roles/owner, roles/editor, or any role whose name says admin (roles/storage.admin,
    roles/iam.serviceAccountAdmin, roles/compute.instanceAdmin.v1, projects/p/roles/myAdmin)."""
    if role in ("roles/owner", "roles/editor"):
        return True
    return "admin" in role.rsplit("/", 1)[-1].lower()


def is_public(member: str) -> bool:
    return member in PUBLIC_MEMBERS


def function_environments(resource_type: str, props: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, plain environment) of a Cloud Function: the runtime's and the build's."""
    if resource_type == FUNCTION_V2:
        places = (("serviceConfig.environmentVariables", ("serviceConfig", "environmentVariables")),
                  ("buildConfig.environmentVariables", ("buildConfig", "environmentVariables")))
    elif resource_type == FUNCTION_V1:
        places = (("environmentVariables", ("environmentVariables",)),
                  ("buildEnvironmentVariables", ("buildEnvironmentVariables",)))
    else:
        return []
    found = []
    for where, path in places:
        env = _get(props, *path)
        if isinstance(env, Mapping):
            found.append((where, env))
    return found


def _env_items(env: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for name in sorted(env):
        try:
            yield name, env[name]
        except UnknownValueError:
            yield name, None


def secret_in_value(value: str) -> Optional[str]:
    """Why a plain value carries a credential, or None: a URI with a password in its userinfo
    (smtp://user:pw@host) or a password/token in its query string."""
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.password:
        return "a URI with a password in its userinfo"
    if any(_SECRET_QUERY_KEY.fullmatch(key) and item for key, item in parse_qsl(parts.query)):
        return "a URI with a password or token in its query string"
    return None


def smtp_port(value: str) -> Optional[int]:
    try:
        return urlsplit(value).port
    except ValueError:
        return None


def current_stack() -> str:
    """The stack being checked: the engine sets it for the pack (PULUMI_STACK), the mocks for the plan."""
    try:
        return pulumi.get_stack()
    except Exception:  # noqa: BLE001 - outside any runtime there is no stack
        return ""


# ------------------------------------------------------------------------------------------ rules


def _no_admin_grants(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for role, member in iam_grants(args.resource_type, args.props):
        if is_admin_role(role):
            report(f"grants {role} to {member}: owner, editor and *admin roles are never granted by this program")


def _secret_accessor_on_secret_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if _SECRET_GRANT.match(args.resource_type):
        return
    for role, member in iam_grants(args.resource_type, args.props):
        if role in SECRET_ROLES:
            scope = "project-wide" if is_project_wide(args.resource_type) else f"on a {args.resource_type}"
            report(f"grants {role} to {member} {scope}: grant it on the one secret (secretmanager.SecretIamMember)")


def _invoker_never_public_or_project_wide(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for role, member in iam_grants(args.resource_type, args.props):
        if role not in INVOKER_ROLES:
            continue
        if is_public(member):
            report(f"grants {role} to {member}: the functions are invoked by Eventarc only, never by the public")
        if is_project_wide(args.resource_type):
            report(f"grants {role} to {member} project-wide: grant it on the function's own Cloud Run service")


def _function_ingress_internal_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == FUNCTION_V2:
        ingress = _get(args.props, "serviceConfig", "ingressSettings")
    elif args.resource_type == FUNCTION_V1:
        ingress = _get(args.props, "ingressSettings")
    else:
        return
    if ingress != INTERNAL_ONLY:
        shown = ingress or "unset (ALLOW_ALL)"
        report(f"ingress is {shown}: set {INTERNAL_ONLY}, which still admits Eventarc and Pub/Sub")


def is_secret_reference_name(name: str) -> bool:
    """SMTP_PASSWORD_SECRET and the like: NAME_SECRET where NAME itself is named like a credential."""
    match = _SECRET_REFERENCE_NAME.match(name)
    return bool(match and _SECRET_NAME.search(match.group("base")))


def _no_plain_credentials_in_env(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for where, env in function_environments(args.resource_type, args.props):
        for name, value in _env_items(env):
            if is_secret_reference_name(name):
                # A value still unknown (preview) passes, as elsewhere; a known one must be a secret's name.
                if isinstance(value, str) and not _SECRET_RESOURCE.match(value):
                    report(f"{where}.{name} must hold a Secret Manager secret name (projects/<project>/secrets/<id>), "
                           "not a value: the function reads the secret itself")
            elif _SECRET_NAME.search(name):
                report(f"{where}.{name} is a plain-text variable named like a credential: "
                       "pass it through secret_environment_variables (Secret Manager)")
            elif isinstance(value, str) and (why := secret_in_value(value)):
                report(f"{where}.{name} holds {why} in plain text: pass the password through "
                       "secret_environment_variables (Secret Manager)")


def _no_smtp_port_25(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for where, env in function_environments(args.resource_type, args.props):
        value = _get(env, "SMTP_CONNECTION_URI")
        if isinstance(value, str) and smtp_port(value) == FORBIDDEN_PORT:
            report(f"{where}.SMTP_CONNECTION_URI uses port 25, which Google Cloud blocks for outbound mail: "
                   "use 587 (smtp://, STARTTLS) or 465 (smtps://)")


def _buckets_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == BUCKET:
        prevention = _get(args.props, "publicAccessPrevention")
        if prevention != "enforced":
            report(f"publicAccessPrevention is {prevention or 'unset (inherited)'}: set it to enforced")
        if _get(args.props, "uniformBucketLevelAccess") is not True:
            report("uniformBucketLevelAccess is not true: object ACLs could make single objects public")
        return
    if args.resource_type.startswith("gcp:storage/") and is_iam_type(args.resource_type):
        for role, member in iam_grants(args.resource_type, args.props):
            if is_public(member):
                report(f"grants {role} to {member}: bucket contents must never be public")
    elif args.resource_type in _BUCKET_ACL_TYPES:
        entries = [str(_get(args.props, "entity") or "")]
        for key in ("roleEntities", "defaultAcls"):
            entries += [str(entry) for entry in _get(args.props, key) or []]
        for entry in entries:
            if any(public in entry for public in PUBLIC_MEMBERS):
                report(f"ACL entry {entry}: bucket contents must never be public")


def _prod_ttl_on(args: StackValidationArgs, report: ReportViolation) -> None:
    if current_stack() not in PROD_STACKS:
        return
    ttl = [r for r in args.resources if r.resource_type == FIRESTORE_FIELD and _get(r.props, "ttlConfig") is not None]
    if not ttl:
        report("no Firestore TTL policy: finished mail documents (addresses, bodies) are kept forever; "
               "set mailer:ttlExpireType (e.g. month) and mailer:ttlExpireValue")


def _prod_max_instances_bounded(args: StackValidationArgs, report: ReportViolation) -> None:
    if current_stack() not in PROD_STACKS:
        return
    for resource in args.resources:
        if resource.resource_type == FUNCTION_V2:
            count = _get(resource.props, "serviceConfig", "maxInstanceCount")
        elif resource.resource_type == FUNCTION_V1:
            count = _get(resource.props, "maxInstances")
        else:
            continue
        if not isinstance(count, (int, float)) or count <= 0:
            report("max instances is not set, so it scales to the platform default "
                   f"(and so do the SMTP connections); set it to at most {PROD_MAX_INSTANCES}", resource.urn)
        elif count > PROD_MAX_INSTANCES:
            report(f"max instances is {int(count)}, above {PROD_MAX_INSTANCES}", resource.urn)


NO_ADMIN_GRANTS = ResourceValidationPolicy(
    name="no-owner-editor-admin-grants",
    description="No IAM resource grants roles/owner, roles/editor or any *admin role.",
    enforcement_level=MANDATORY,
    validate=_no_admin_grants,
)
SECRET_ACCESSOR_ON_SECRET = ResourceValidationPolicy(
    name="secret-accessor-on-a-secret-only",
    description="roles/secretmanager.secretAccessor, secretVersionAdder and secretVersionManager are granted on one secret, never project-wide.",
    enforcement_level=MANDATORY,
    validate=_secret_accessor_on_secret_only,
)
INVOKER_SCOPED = ResourceValidationPolicy(
    name="invoker-not-public-not-project-wide",
    description="run.invoker (and cloudfunctions.invoker) never to allUsers/allAuthenticatedUsers, never project-wide.",
    enforcement_level=MANDATORY,
    validate=_invoker_never_public_or_project_wide,
)
INGRESS_INTERNAL = ResourceValidationPolicy(
    name="function-ingress-internal-only",
    description="Cloud Functions accept internal traffic only (ALLOW_INTERNAL_ONLY).",
    enforcement_level=MANDATORY,
    validate=_function_ingress_internal_only,
)
NO_PLAIN_CREDENTIALS = ResourceValidationPolicy(
    name="no-plain-text-credentials-in-env",
    description="No plain environment variable named like or holding a password or token; use secret_environment_variables.",
    enforcement_level=MANDATORY,
    validate=_no_plain_credentials_in_env,
)
BUCKETS_PRIVATE = ResourceValidationPolicy(
    name="buckets-private",
    description="Buckets enforce public access prevention and uniform access; no public member on bucket IAM or ACLs.",
    enforcement_level=MANDATORY,
    validate=_buckets_private,
)
NO_PORT_25 = ResourceValidationPolicy(
    name="no-smtp-port-25",
    description="SMTP_CONNECTION_URI never uses port 25.",
    enforcement_level=MANDATORY,
    validate=_no_smtp_port_25,
)
PROD_TTL = StackValidationPolicy(
    name="prod-mail-ttl-on",
    description="A prod stack has a Firestore TTL policy on the mail collection.",
    enforcement_level=ADVISORY,
    validate=_prod_ttl_on,
)
PROD_MAX_INSTANCES_BOUNDED = StackValidationPolicy(
    name="prod-max-instances-bounded",
    description=f"In a prod stack every function sets max instances, at most {PROD_MAX_INSTANCES}.",
    enforcement_level=ADVISORY,
    validate=_prod_max_instances_bounded,
)

POLICIES = [
    NO_ADMIN_GRANTS,
    SECRET_ACCESSOR_ON_SECRET,
    INVOKER_SCOPED,
    INGRESS_INTERNAL,
    NO_PLAIN_CREDENTIALS,
    BUCKETS_PRIVATE,
    NO_PORT_25,
    PROD_TTL,
    PROD_MAX_INSTANCES_BOUNDED,
]

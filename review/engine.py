"""The policy pack's rules applied without the engine, the way the engine applies them.

For each recorded RegisterResource request, the properties are built as pulumi-policy's analyzer
builds them from the engine's Analyze request (``AnalyzeResource``/``AnalyzeStack`` in
pulumi_policy/policy.py): the property struct as JSON (camelCase names), ``deserialize_properties``
(secrets unwrapped to their values), wrapped by ``unknown_checking_proxy``. The result of a
validation is awaited when it is awaitable. The level is the policy's, else the pack's, else
advisory, as in the analyzer.

Imports pulumi_policy: runs in the policy venv (.venv-policy) only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any, Optional

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from policy.rules import PACK_ENFORCEMENT, POLICIES
from review.harness import Registration


@dataclass(frozen=True)
class Violation:
    message: str
    urn: Optional[str] = None  # None: the stack as a whole


@dataclass
class PolicyResult:
    policy: Policy
    level: EnforcementLevel
    violations: list[Violation] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)
    cannot_run: list[str] = field(default_factory=list)  # a property was unknown (never, under mocks with preview off)

    @property
    def blocking(self) -> bool:
        return self.level == EnforcementLevel.MANDATORY and bool(self.violations)


def enforcement(policy: Policy, pack_level: Optional[EnforcementLevel] = PACK_ENFORCEMENT) -> EnforcementLevel:
    """The policy's own level, else the pack's, else advisory (PolicyPack's default)."""
    return policy.enforcement_level or pack_level or EnforcementLevel.ADVISORY


def engine_props(registration: Registration) -> Any:
    """The properties as the analyzer hands them to a rule."""
    return unknown_checking_proxy(deserialize_properties(registration.raw))


def _options(registration: Registration) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=registration.parent or None,
    )


def resource_args(registration: Registration, config: Optional[dict[str, Any]] = None) -> ResourceValidationArgs:
    return ResourceValidationArgs(
        registration.type, engine_props(registration), registration.urn, registration.name,
        _options(registration), None, config, {},
    )


def stack_args(registrations: Sequence[Registration], config: Optional[dict[str, Any]] = None) -> StackValidationArgs:
    """Every resource with its parent and dependencies linked to the other PolicyResources, as AnalyzeStack does."""
    resources = {
        r.urn: PolicyResource(r.type, engine_props(r), r.urn, r.name, _options(r), None, None, [], {})
        for r in registrations
    }
    for r in registrations:
        resource = resources[r.urn]
        if r.parent in resources:
            resource.parent = resources[r.parent]
        resource.dependencies.extend(resources[d] for d in r.dependencies if d in resources)
    return StackValidationArgs(list(resources.values()), config, {})


def _run(result: Any) -> None:
    if isawaitable(result):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(result)
        finally:
            loop.close()


def _validate(policy: Policy, args: Any, result: PolicyResult, default_urn: Optional[str]) -> None:
    def report(message: str, urn: Optional[str] = None) -> None:
        result.violations.append(Violation(message, urn or default_urn))

    try:
        _run(policy.validate(args, report))  # type: ignore[attr-defined]
    except UnknownValueError as error:
        result.cannot_run.append(f"{default_urn or 'stack'}: {error.message}")
    except _NotApplicableError as error:
        result.not_applicable.append(error.reason or "")


def check(
    registrations: Sequence[Registration],
    policies: Sequence[Policy] = POLICIES,
    pack_level: Optional[EnforcementLevel] = PACK_ENFORCEMENT,
) -> list[PolicyResult]:
    """Every policy over every resource (resource policies) or the whole stack (stack policies)."""
    results = []
    for policy in policies:
        result = PolicyResult(policy, enforcement(policy, pack_level))
        if result.level != EnforcementLevel.DISABLED:
            if isinstance(policy, ResourceValidationPolicy):
                for registration in registrations:
                    _validate(policy, resource_args(registration), result, registration.urn)
            elif isinstance(policy, StackValidationPolicy):
                _validate(policy, stack_args(registrations), result, None)
        results.append(result)
    return results

"""The policy pack's rules and the offline plan, tested in the policy venv (`make policy-test`).

pulumi-policy cannot live in the main .venv (it pins protobuf below 5.30; the function's Firestore
client needs 6.x), so the main pytest run skips this folder and `make test` runs it separately with
.venv-policy/bin/pytest --confcutdir=tests/policy (the conftests above this one need .venv).

Resources are declared with the real pulumi_gcp classes under Pulumi's mocks (review/harness.py) and
the rules see them as the engine hands them over (review/engine.py): the RegisterResource property
struct, deserialized by pulumi_policy and wrapped by unknown_checking_proxy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

if importlib.util.find_spec("pulumi_policy") is None:  # the main .venv: these tests run in .venv-policy
    collect_ignore_glob = ["test_*.py"]
else:
    import pulumi
    from pulumi.runtime import settings as pulumi_settings

    from review import engine
    from review.harness import PulumiHarness, Registration

    def declare(build: Callable[[], Any], stack: str = "test") -> list[Registration]:
        """Run build() as a Pulumi program for the named stack; what it registered."""
        harness = PulumiHarness()
        harness.install(stack, {}, [])
        return harness.run(build).registrations

    def violations(policy: Any, registrations: Sequence[Registration]) -> list[str]:
        """The messages one policy reports over these resources (resource or stack policy)."""
        [result] = engine.check(registrations, [policy])
        return [violation.message for violation in result.violations]

    @pytest.fixture(autouse=True)
    def _fresh_runtime() -> Iterator[None]:
        yield
        pulumi.runtime.set_all_config({}, [])
        pulumi_settings.ROOT.set(None)

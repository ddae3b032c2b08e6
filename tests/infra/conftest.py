"""Pulumi mock runtime for the infra tests: no CLI, no cloud, the real SDK serialisation path.

The harness itself (RecordingMonitor, GcpMocks, PulumiHarness, StackRun) lives in review/harness.py,
shared with the offline plan (`make plan`), so the tests and the plan a reviewer reads see the same
mocked provider. The autouse ``pulumi_mocks`` fixture installs it; tests then drive either the
component directly or ``__main__.py`` via runpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pulumi
import pytest
from pulumi.runtime import settings as pulumi_settings

from review.harness import (  # noqa: F401 (re-exported for the tests)
    FUNCTION,
    PROJECT_FILE,
    PROJECT_NUMBER,
    REPO_ROOT,
    SECRET_MARK,
    SECRET_SIG,
    STACK_FILES,
    STACKS_DIR,
    TEST_PASSWORD,
    GcpMocks,
    PulumiHarness,
    RecordingMonitor,
    Registration,
    StackRun,
    is_secret,
    plain_occurrences,
    service_agent_email,
    stack_config,
    stack_name,
    unwrap,
)

# The plain keys every test stack needs; tests add what they are about.
BASE_SETTINGS = {
    "gcp:project": "acme-mailer-unit",
    "mailer:region": "europe-west3",
    "mailer:firestoreLocation": "europe-west3",
    "mailer:smtpConnectionUri": "smtp://mailer@relay.acme.test:587",
    "mailer:defaultFrom": "noreply@acme.example",
}


@pytest.fixture(autouse=True)
def pulumi_mocks() -> Iterator[PulumiHarness]:
    harness = PulumiHarness()
    harness.install("test", {}, [])
    try:
        yield harness
    finally:
        pulumi.runtime.set_all_config({}, [])
        pulumi_settings.ROOT.set(None)


@pytest.fixture(params=STACK_FILES, ids=[stack_name(path) for path in STACK_FILES])
def stack_file(request: pytest.FixtureRequest) -> Path:
    return request.param


@pytest.fixture
def stack_run(pulumi_mocks: PulumiHarness, stack_file: Path) -> StackRun:
    """__main__.py run against one stack file, with the test password set as a secret."""
    config = {**stack_config(stack_file), "mailer:smtpPassword": TEST_PASSWORD}
    pulumi_mocks.install(stack_name(stack_file), config, ["mailer:smtpPassword"])
    return pulumi_mocks.run_main()

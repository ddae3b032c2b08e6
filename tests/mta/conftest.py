"""The deployed function's whole path (emulator -> Eventarc-shaped events -> functions-framework) against
a real MTA: the session's private Postfix (tests/support/postfix.py) instead of aiosmtpd."""

from __future__ import annotations

import pytest

from tests.function.conftest import Pipeline, function_app, pipeline, sweep_app  # noqa: F401  (fixtures reused as they are)
from tests.support.postfix import POSTFIX_PASSWORD, POSTFIX_USER, PostfixServer


def use_postfix(line: Pipeline, server: PostfixServer, password: str = POSTFIX_PASSWORD) -> None:
    """Point the function at Postfix the way production is configured: user in the URI, password in
    SMTP_PASSWORD (Secret Manager)."""
    line.configure(SMTP_CONNECTION_URI=server.uri(POSTFIX_USER), SMTP_PASSWORD=password)


@pytest.fixture
def postfix_pipeline(pipeline: Pipeline, postfix_server: PostfixServer) -> Pipeline:
    use_postfix(pipeline, postfix_server)
    pipeline.start_bridge()
    return pipeline

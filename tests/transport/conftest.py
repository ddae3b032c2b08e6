"""Fixtures for the transport tests (the SMTP servers come from tests/support/smtp.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mailer.transport import SmtpPool, parse_smtp_uri


@pytest.fixture
def open_pool() -> Iterator[Callable[..., SmtpPool]]:
    """open_pool(uri, password=None) -> SmtpPool, closed at test end."""
    pools: list[SmtpPool] = []

    def make(uri: str, password: str | None = None) -> SmtpPool:
        pool = SmtpPool(parse_smtp_uri(uri, password))
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()

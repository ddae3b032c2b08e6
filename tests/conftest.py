"""Fixtures shared by all tests live in tests/support/; they are registered here."""

pytest_plugins = [
    "tests.support.firestore",
    "tests.support.smtp",
    "tests.support.postfix",
]

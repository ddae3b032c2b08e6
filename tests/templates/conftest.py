"""The function's end-to-end fixtures (emulator -> trigger bridge -> functions-framework -> SMTP), shared
with tests/function so template and uid emails travel the same path as every other email."""

from tests.function.conftest import function_app, pipeline, sweep_app  # noqa: F401  (fixtures, used by name)

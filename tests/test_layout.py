"""The architecture's one rule of direction, checked on the source: the deployed function never imports
Pulumi (or infra/local), infra/ packages functions/ without importing it, and the operator commands
in ops/ need neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


# Per-file exceptions: ops/check.py (issue 11, `make check`) reads a stack through infra.config's model and
# connects with the function's own URI parser, composer and transport, so it reports what the deployed
# function would do; ops/import_config.py (issue 12) validates the stack it writes with the same model.
# Nothing else in ops/ may import them.
ALLOWED_IMPORTS = {"ops/check.py": {"infra", "mailer"}, "ops/import_config.py": {"infra"}}


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("functions", {"pulumi", "pulumi_gcp", "infra", "local", "ops", "bench", "review", "policy", "tests"}),
    ("infra", {"mailer", "main", "local", "ops", "bench", "review", "policy", "tests"}),
    # Operator commands talk to Firestore only: no Pulumi, no function internals (the sweep sends).
    ("ops", {"pulumi", "pulumi_gcp", "infra", "mailer", "main", "local", "tests"}),
    # The review tools read the program (infra) and apply the pack's rules; never the function.
    ("review", {"mailer", "main", "local", "ops", "tests"}),
    ("policy", {"mailer", "main", "local", "ops", "review", "infra", "tests"}),
])
def test_imports_flow_one_way(folder: str, forbidden: set[str]) -> None:
    modules = imported_modules(ROOT / folder)
    assert modules, f"no Python files found under {folder}/"
    offending = {
        path: sorted(bad) for path, names in modules.items()
        if (bad := names & forbidden - ALLOWED_IMPORTS.get(path, set()))
    }
    assert offending == {}

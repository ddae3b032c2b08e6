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
    offending = {path: sorted(names & forbidden) for path, names in modules.items() if names & forbidden}
    assert offending == {}

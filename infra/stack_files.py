"""Stack files read as the Pulumi CLI hands them to the program: the stack's `config:` over the
project's declared defaults, every value a string. The CLI does this for `pulumi up`; the local run
and the tests, which have no CLI, use this so they see the same settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILE = REPO_ROOT / "Pulumi.yaml"
NAMESPACE = "mailer"


def _as_config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    # Structured values (e.g. mailer:events, issue 12) reach the program as JSON, as the CLI passes them.
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def project_defaults(project_file: Path = PROJECT_FILE) -> dict[str, str]:
    """Pulumi.yaml's declared defaults, namespaced (`mailer:memory`), as strings."""
    declared = yaml.safe_load(project_file.read_text())["config"]
    return {
        (key if ":" in key else f"{NAMESPACE}:{key}"): _as_config_string(spec["default"])
        for key, spec in declared.items()
        if isinstance(spec, dict) and "default" in spec
    }


def stack_config(stack_file: Path, project_file: Path = PROJECT_FILE) -> dict[str, str]:
    """The stack file's config merged over the project defaults. Raises OSError or yaml.YAMLError."""
    values = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
    return {**project_defaults(project_file), **{key: _as_config_string(value) for key, value in values.items()}}

"""The GitHub workflows (.github/): linted offline as `make lint-workflows` lints them, the linters shown to
fail on a known-bad workflow, and the rules the README promises checked on the files themselves: every
remote action pinned to a commit, least permissions per job, one preview per stack in CI, deploys never
cancelled, prod behind the `production` environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = GITHUB / "workflows"
BIN = Path(sys.executable).parent
LOCAL_ACTION = "./.github/actions/pulumi-stack"

# The same commands as the Makefile's lint-workflows target.
ACTIONLINT = [str(BIN / "actionlint"), "-shellcheck", str(BIN / "shellcheck"), "-pyflakes=", "-oneline"]
ZIZMOR = [str(BIN / "zizmor"), "--offline", "--no-progress", "--min-severity", "medium"]

BAD_WORKFLOW = """\
name: bad
on: pull_request
permissions: {}
jobs:
  build:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
      - run: ls $HOME/x
"""


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as True; nothing here needs the triggers through it.
    return yaml.safe_load(path.read_text())


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def jobs() -> dict[str, dict[str, Any]]:
    return {f"{path.name}:{name}": job for path in workflow_files() for name, job in load(path)["jobs"].items()}


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_there_are_workflows() -> None:
    assert {path.name for path in workflow_files()} >= {"pull-request.yml", "deploy.yml"}


def test_actionlint_passes_the_workflows() -> None:
    completed = run([*ACTIONLINT, *(str(path.relative_to(ROOT)) for path in workflow_files())], ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_zizmor_passes_the_workflows_and_the_local_action() -> None:
    completed = run([*ZIZMOR, ".github"], ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "completed .github/actions/pulumi-stack/action.yml" in completed.stderr


@pytest.fixture
def bad_repo(tmp_path: Path) -> Path:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(BAD_WORKFLOW)
    return tmp_path


def test_actionlint_fails_on_injection_and_shell_findings(bad_repo: Path) -> None:
    completed = run([*ACTIONLINT, ".github/workflows/bad.yml"], bad_repo)
    assert completed.returncode != 0
    assert '"github.event.pull_request.title" is potentially untrusted' in completed.stdout
    assert "SC2086" in completed.stdout  # ShellCheck ran on the run: script


def test_zizmor_fails_on_injection_and_unpinned_action(bad_repo: Path) -> None:
    completed = run([*ZIZMOR, ".github"], bad_repo)
    assert completed.returncode != 0
    assert "template-injection" in completed.stdout
    assert "unpinned-uses" in completed.stdout


def test_every_remote_action_is_pinned_to_a_commit_with_its_version() -> None:
    files = [*workflow_files(), *sorted(GITHUB.glob("actions/*/action.yml"))]
    uses = [(path.name, line.strip()) for path in files for line in path.read_text().splitlines()
            if re.match(r"\s*(- )?uses:", line)]
    remote = [(name, line) for name, line in uses if LOCAL_ACTION not in line]
    assert remote
    bad = [(name, line) for name, line in remote
           if not re.fullmatch(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line)]
    assert bad == []


def test_least_permissions_per_job() -> None:
    for path in workflow_files():
        assert load(path)["permissions"] == {}, path.name
    for name, job in jobs().items():
        steps = job["steps"]
        authenticates = any(step.get("uses") == LOCAL_ACTION for step in steps)
        comments = any("github-script" in step.get("uses", "") for step in steps)
        permissions = job["permissions"]
        assert ("id-token" in permissions) == authenticates, name
        assert permissions.get("id-token", "write") == "write", name
        assert ("pull-requests" in permissions) == comments, name
        assert set(permissions) <= {"contents", "id-token", "pull-requests"}, name
        assert permissions.get("contents", "read") == "read", name
        for step in steps:
            if "actions/checkout@" in step.get("uses", ""):
                assert step["with"]["persist-credentials"] is False, name


def test_no_expressions_inside_run_scripts() -> None:
    files = [*workflow_files(), *sorted(GITHUB.glob("actions/*/action.yml"))]
    for path in files:
        data = load(path)
        steps = [step for job in data.get("jobs", {}).values() for step in job.get("steps", [])]
        steps += data.get("runs", {}).get("steps", [])
        for step in steps:
            assert "${{" not in step.get("run", ""), (path.name, step.get("name"))


def test_every_deployed_stack_is_previewed_in_pull_requests() -> None:
    # Every stack file but `local` (used by `make demo` only, never deployed) is a CI stack.
    stacks = {path.name.split(".")[1] for path in (ROOT / "stacks").glob("Pulumi.*.yaml")} - {"local"}
    pull_request = load(WORKFLOWS / "pull-request.yml")["jobs"]
    assert set(pull_request["preview"]["strategy"]["matrix"]["stack"]) == stacks
    assert set(pull_request["comment"]["strategy"]["matrix"]["stack"]) == stacks
    assert pull_request["preview"]["needs"] == "test"
    # Pull requests impersonate the read-only previewers; only deploy.yml names the deployers.
    assert "GCP_PREVIEW_SERVICE_ACCOUNT_" in (WORKFLOWS / "pull-request.yml").read_text()
    assert "vars.GCP_SERVICE_ACCOUNT_" not in (WORKFLOWS / "pull-request.yml").read_text()
    assert "GCP_PREVIEW_SERVICE_ACCOUNT_" not in (WORKFLOWS / "deploy.yml").read_text()
    preview_steps = pull_request["preview"]["steps"]
    assert any("--policy-pack policy" in step.get("run", "") and "pulumi preview" in step.get("run", "")
               for step in preview_steps)


def test_deploys_run_dev_then_prod_behind_approval_and_are_never_cancelled() -> None:
    deploy = load(WORKFLOWS / "deploy.yml")
    assert deploy[True].keys() == {"push", "workflow_dispatch"}
    assert deploy[True]["push"] == {"branches": ["main"]}
    dev, prod = deploy["jobs"]["dev"], deploy["jobs"]["prod"]
    assert prod["needs"] == "dev" and prod["environment"] == "production" and "environment" not in dev
    for stack, job in (("dev", dev), ("prod", prod)):
        assert job["concurrency"] == {"group": f"pulumi-deploy-{stack}", "cancel-in-progress": False}
        assert any(f"pulumi up --stack {stack} --yes" in step.get("run", "") for step in job["steps"])

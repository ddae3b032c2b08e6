"""The pull request workflow's comment script (actions/github-script), run under node against a fake GitHub
API: one comment per stack, found again by its hidden marker and updated on the next push, not duplicated;
other stacks' and people's comments left alone; long output cut from the front; a preview that stopped early
still reported."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

HARNESS = """
const fs = require('fs');
const state = JSON.parse(fs.readFileSync('state.json', 'utf8'));
let nextId = 1000 + state.comments.length;
const calls = [];
const github = {
  paginate: async (fn, args) => { calls.push(['list', args.issue_number]); return state.comments; },
  rest: { issues: {
    listComments: 'listComments',
    updateComment: async ({ comment_id, body }) => {
      calls.push(['update', comment_id]);
      state.comments.find((c) => c.id === comment_id).body = body;
    },
    createComment: async ({ issue_number, body }) => {
      calls.push(['create', issue_number]);
      const c = { id: nextId++, user: { type: 'Bot' }, body };
      state.comments.push(c);
      return { data: c };
    },
  } },
};
const context = { serverUrl: 'https://github.com', repo: { owner: 'acme', repo: 'mailer' }, runId: 7, issue: { number: 42 } };
const core = { info: () => {} };
(async () => {
  await (async () => { SCRIPT })();
  fs.writeFileSync('state.json', JSON.stringify({ comments: state.comments, calls }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def comment_script() -> str:
    jobs = yaml.safe_load((ROOT / ".github/workflows/pull-request.yml").read_text())["jobs"]
    step = next(s for s in jobs["comment"]["steps"] if "github-script" in s.get("uses", ""))
    return step["with"]["script"]


@pytest.fixture
def run_comment(tmp_path: Path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (make test needs it for the emulator too)", pytrace=False)
    (tmp_path / "harness.js").write_text(HARNESS.replace("SCRIPT", comment_script()))

    def run(stack: str, comments: list[dict[str, Any]], output: str | None, status: str | None) -> dict[str, Any]:
        preview = tmp_path / "preview"
        shutil.rmtree(preview, ignore_errors=True)
        preview.mkdir()
        if output is not None:
            (preview / "output.txt").write_text(output)
        if status is not None:
            (preview / "status").write_text(status + "\n")
        (tmp_path / "state.json").write_text(json.dumps({"comments": comments}))
        env = {"PATH": "/usr/bin:/bin", "STACK": stack, "HEAD_SHA": "0123456789abcdef0123"}
        completed = subprocess.run([node, "harness.js"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
        return json.loads((tmp_path / "state.json").read_text())

    return run


def test_first_push_creates_one_comment_per_stack_and_the_next_updates_it(run_comment) -> None:
    human = {"id": 1, "user": {"type": "User"}, "body": "<!-- pulumi-preview:dev --> quoted by a person"}
    first = run_comment("dev", [human], "Previewing update (dev):\n + 3 to create\n", "0")
    assert first["calls"] == [["list", 42], ["create", 42]]
    dev = first["comments"][-1]
    assert dev["body"].startswith("<!-- pulumi-preview:dev -->\n### `pulumi preview` on stack **dev** succeeded")
    assert "+ 3 to create" in dev["body"] and "0123456789ab" in dev["body"]

    prod = run_comment("prod", first["comments"], "Policy violations:\n  [mandatory] no-owner\n", "255")
    assert prod["calls"] == [["list", 42], ["create", 42]]
    assert "**prod** failed (exit 255)" in prod["comments"][-1]["body"]

    again = run_comment("dev", prod["comments"], "Previewing update (dev):\n ~ 1 to update\n", "0")
    assert again["calls"] == [["list", 42], ["update", dev["id"]]]
    assert len(again["comments"]) == 3
    updated = next(c for c in again["comments"] if c["id"] == dev["id"])
    assert "~ 1 to update" in updated["body"] and "+ 3 to create" not in updated["body"]
    assert again["comments"][0] == human


def test_long_output_keeps_the_end_and_fences_survive_backticks(run_comment) -> None:
    output = "x" * 70000 + "\n```\nPolicies: all passed\n"
    body = run_comment("dev", [], output, "0")["comments"][-1]["body"]
    assert len(body) < 65536
    assert "characters cut" in body
    assert body.endswith("Policies: all passed\n````\n</details>")  # a fence longer than any run of backticks


def test_a_preview_that_stopped_early_is_still_reported(run_comment) -> None:
    body = run_comment("prod", [], None, None)["comments"][-1]["body"]
    assert "**prod** did not run to the end" in body and "see the job log" in body

"""Benchmark: cold start, from a fresh Python process to the function ready to serve, against the extension.

    .venv/bin/python -m bench.coldstart [--runs 5] [--top 10] [--python .venv-function/bin/python]

The interpreter is that of .venv-function (`make bench-coldstart` builds it): the function's own
requirements (functions/requirements.txt, at the versions requirements-dev.lock pins) on Python 3.12
when the machine has it (the stacks deploy python312), as a deployed function has them. The development venv holds more: Pulumi pulls in OpenTelemetry's instrumentation
package, and google-api-core imports it at start-up when it is installed (about 35 ms a deployed
function never pays). Without .venv-function the bench runs in the interpreter it was started with and
says so.

Each run starts a fresh interpreter that does what functions-framework does before it can serve:
import functions_framework, create_app(target="process_mail", source="functions/main.py") (which loads
main.py and everything it imports, and builds the Flask app), then prints "ready". The time is taken
from just before the process is started to that line (interpreter start-up included, exit excluded);
the median of --runs is printed with a bare interpreter's start-up for reference, and compared with
the extension's load timed in the same runs: `node bench/extension/load.js` requires what the
extension's compiled lib/index.js requires, in its order, at the versions its package-lock.json pins
(firebase-admin 13.8.0 with @google-cloud/firestore 7.11.6, firebase-functions 6.6.0, nodemailer 8.0.5,
handlebars, @sendgrid/mail, zod), registers the trigger and prints "ready" (the extension's own ~1,500
compiled lines are not in it). That is the extension's module load as issue 10 defines it, but it leaves
out the Firestore gRPC client, which @google-cloud/firestore loads on its first request (the first event
pays for it) while google.cloud.firestore loads it at import: `load.js --with-grpc` also requires it,
and the bench prints the ratio to that as the like-for-like figure. Issue 10 measured the extension's module load at 430 to 450 ms on these
machines; that figure is used when bench/extension is not installed. The same runs also time the floor
the function stands on: create_app of a stub that imports nothing (functions-framework alone, which the
Python runtime of Cloud Functions loads whatever the function is) and of a stub that only imports
google.cloud.firestore (the client every email needs to claim and settle its document). All the
programs are timed in turn, run after run, so drift on a shared machine hits them alike. One more run under
`python -X importtime` names the biggest contributors: the imports main.py and functions-framework
make themselves (with everything under them), and the top-level packages by their own import time.
Bytecode caches are warmed by one unmeasured run first, as a deployed image has them. Figures are this
machine's (shared, 2 cores): compare the ratio, not the milliseconds. Nothing here asserts; it prints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "functions" / "main.py"
FUNCTION_PYTHON = ROOT / ".venv-function" / "bin" / "python"  # `make bench-coldstart` builds it
TARGET = "process_mail"
EXTENSION_MS = (430, 450)  # firestore-send-email's module load on these machines (issue 10)
GOAL = (f"goal: at most the extension's module load (issue 10: {EXTENSION_MS[0]}-{EXTENSION_MS[1]} ms; timed in the "
        "same runs when bench/extension is installed)")


def ready_script(source: Path) -> str:
    """What functions-framework does before it can serve `source`, then "ready"."""
    return (f"from functions_framework import create_app\n"
            f"create_app(target={TARGET!r}, source={str(source)!r}, signature_type='cloudevent')\n"
            f"print('ready', flush=True)\n")


READY_SCRIPT = ready_script(SOURCE)
BARE_SCRIPT = 'print("ready", flush=True)'
# The floor: stub functions that load what any Firestore-triggered Python function loads.
STUBS = {
    "framework": f"def {TARGET}(event):\n    pass\n",
    "firestore": f"import google.cloud.firestore  # noqa: F401\n\n\ndef {TARGET}(event):\n    pass\n",
}
PYTHON = sys.executable  # the interpreter under test (--python)
# The anchor, timed in the same runs: what the extension's lib/index.js loads (its dependencies at its
# locked versions; `make bench-coldstart` npm-installs them into bench/extension).
EXTENSION_DIR = ROOT / "bench" / "extension"
EXTENSION_LOAD = EXTENSION_DIR / "load.js"


def extension_command() -> list[str] | None:
    """node bench/extension/load.js, when node and its packages are there."""
    node = shutil.which("node")
    if node is None or not (EXTENSION_DIR / "node_modules" / "firebase-admin").is_dir():
        return None
    return [node, str(EXTENSION_LOAD)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def time_to_ready(script: str | list[str]) -> float:
    """Milliseconds from starting a fresh interpreter on `script` (Python source, or a whole command such
    as the extension's anchor) to its "ready" line."""
    command = [PYTHON, "-c", script] if isinstance(script, str) else script
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=child_env())
    line = process.stdout.readline()
    elapsed = (time.perf_counter() - started) * 1000
    _, errors = process.communicate(timeout=60)
    if line.strip() != "ready":
        tail = errors.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{' '.join(command[:2])} did not load: {tail[0]}")
    return elapsed


def import_times(script: str) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) per line of `python -X importtime`."""
    done = subprocess.run([PYTHON, "-X", "importtime", "-c", script], cwd=ROOT, capture_output=True,
                          text=True, env=child_env(), timeout=60)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((int(self_us), int(cumulative_us), depth, name.strip()))
    return rows


@dataclass
class Node:
    name: str
    self_us: int
    cumulative: int
    children: list[Node] = field(default_factory=list)


def tree(rows: list[tuple[int, int, int, str]], skip: set[str]) -> list[Node]:
    """The import tree (importtime prints a module after what it imported, one level deeper)."""
    pending: dict[int, list[Node]] = defaultdict(list)
    for self_us, cumulative, depth, name in rows:
        node = Node(name, self_us, cumulative, pending.pop(depth + 1, []))
        pending[depth].append(node)
    return [node for node in pending[0] if node.name not in skip]


def collapsed(node: Node) -> Node:
    """A module that is mostly one import of another is shown as one line: "a > b" (b's children)."""
    while True:
        heavy = [child for child in node.children if child.cumulative >= 0.9 * node.cumulative]
        if not heavy:
            return node
        child = heavy[0]
        rest = [other for other in node.children if other is not child]
        node = Node(f"{node.name} > {child.name}", node.self_us, node.cumulative, child.children + rest)


def biggest(roots: list[Node], count: int) -> list[tuple[int, Node]]:
    """The `count` largest nodes, each shown with the import that pulled it in: grow from the roots,
    always taking the largest node whose parent is taken. (depth, node) in tree order."""
    roots = [collapsed(node) for node in roots]
    frontier = [(0, node) for node in roots]
    taken: set[int] = set()
    while frontier and len(taken) < count:
        depth, node = max(frontier, key=lambda item: item[1].cumulative)
        frontier.remove((depth, node))
        taken.add(id(node))
        node.children = [collapsed(child) for child in node.children]
        frontier += [(depth + 1, child) for child in node.children]
    shown: list[tuple[int, Node]] = []

    def walk(node: Node, depth: int) -> None:
        if id(node) in taken:
            shown.append((depth, node))
            for child in sorted(node.children, key=lambda child: -child.cumulative):
                walk(child, depth + 1)

    for root in sorted(roots, key=lambda root: -root.cumulative):
        walk(root, 0)
    return shown


def run(runs: int, top: int, stub_folder: Path) -> int:
    scripts: dict[str, str | list[str]] = {"function": READY_SCRIPT, "bare": BARE_SCRIPT}
    anchor = extension_command()
    if anchor is not None:
        scripts["extension"] = anchor
        scripts["extension_grpc"] = [*anchor, "--with-grpc"]
    for name, text in STUBS.items():
        (stub_folder / name).mkdir()
        (stub_folder / name / "main.py").write_text(text)
        scripts[name] = ready_script(stub_folder / name / "main.py")
    for script in scripts.values():
        time_to_ready(script)  # warms the bytecode caches; not counted
    times: dict[str, list[float]] = {name: [] for name in scripts}
    for number in range(runs):
        for name, script in scripts.items():  # in turn, so drift hits every program alike
            times[name].append(time_to_ready(script))
        print(f"  [{number + 1}/{runs}] function {times['function'][-1]:.0f} ms", file=sys.stderr, flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    ready = times["function"]
    rows = import_times(READY_SCRIPT)
    base = {name for _, _, _, name in import_times(BARE_SCRIPT)}  # what every interpreter imports anyway

    print(f"cold start: fresh `python` -> functions-framework create_app({TARGET}, functions/main.py) ready, "
          f"median of {runs}")
    print(f"  interpreter: {interpreter_label()}")
    print(f"  ready after {median['function']:.0f} ms (runs: {', '.join(f'{ms:.0f}' for ms in ready)}); "
          f"a bare interpreter: {median['bare']:.0f} ms, so loading costs {median['function'] - median['bare']:.0f} ms")
    low, high = EXTENSION_MS
    floor = median["firestore"]
    if anchor is not None:
        extension = median["extension"]
        print(f"  the extension, timed in the same runs (bench/extension: what its lib/index.js loads, node "
              f"{node_version(anchor[0])}): {extension:.0f} ms -> ratio {median['function'] / extension:.2f}x "
              f"({'met' if median['function'] <= extension else 'not met'}: goal at most 1x; runs: "
              f"{', '.join(f'{ms:.0f}' for ms in times['extension'])})")
        with_grpc = median["extension_grpc"]
        print(f"  like for like, the extension with the Firestore gRPC client its first event loads "
              f"(@google-cloud/firestore defers google-gax and grpc-js until the first request; the Python "
              f"client loads its gRPC stack at import): {with_grpc:.0f} ms -> ratio "
              f"{median['function'] / with_grpc:.2f}x")
        against, label = extension, "the extension's in this run"
    else:
        print(f"  extension's module load: {low}-{high} ms (issue 10's figure; bench/extension is not installed: "
              f"`make bench-coldstart` installs it) -> ratio {median['function'] / high:.2f}-"
              f"{median['function'] / low:.2f}x ({'met' if median['function'] <= high else 'not met'}: goal at most 1x)")
        against, label = high, f"the extension's {high} ms"
    print(f"  the floor, timed in the same runs: functions-framework alone {median['framework']:.0f} ms; "
          f"with google.cloud.firestore imported {floor:.0f} ms ({floor / against:.2f}x {label})")
    print(f"  -> this function adds {median['function'] - floor:+.0f} ms to that floor: its own modules, "
          "email-validator, google-events and the rest of what main.py imports")
    print()
    print(f"  top {top} contributors under -X importtime (cumulative: the module with what it imports first; "
          "indented under the import that pulled it in):")
    for depth, node in biggest(tree(rows, base), top):
        print(f"    {node.cumulative / 1000:>7.1f} ms  {'  ' * depth}{node.name}")
    by_package: dict[str, int] = defaultdict(int)
    for self_us, _, _, name in rows:
        if name not in base:
            by_package[name.split(".")[0]] += self_us
    print(f"  top {top} top-level packages by their own import time (all their modules, self time):")
    for package, self_us in sorted(by_package.items(), key=lambda item: -item[1])[:top]:
        print(f"    {self_us / 1000:>7.1f} ms  {package}")
    total = sum(by_package.values()) / 1000
    print(f"  (all imports beyond a bare interpreter's: {total:.0f} ms of self time under -X importtime, "
          "which inflates it; the median above is without it)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.split("\n\n")[0],
                                     epilog=GOAL)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes to time (default 5)")
    parser.add_argument("--top", type=int, default=10, help="contributors to list (default 10)")
    parser.add_argument("--python", type=Path, default=FUNCTION_PYTHON if FUNCTION_PYTHON.exists() else None,
                        help="the interpreter to time (default .venv-function/bin/python when it exists: the "
                             "function's own requirements, built by `make bench-coldstart`; else this one)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.top < 1:
        parser.error("--runs and --top must be at least 1")
    if args.python is not None:
        if not args.python.exists():
            parser.error(f"--python: {args.python} does not exist")
        global PYTHON
        PYTHON = str(args.python)
    with tempfile.TemporaryDirectory(prefix="coldstart-") as folder:
        return run(args.runs, args.top, Path(folder))


def node_version(node: str) -> str:
    done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip().lstrip("v") or "?"


def interpreter_label() -> str:
    """Which interpreter ran, and whether its packages are the deployed set."""
    version = subprocess.run([PYTHON, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    if Path(PYTHON).absolute() == FUNCTION_PYTHON:
        return (f"{FUNCTION_PYTHON.relative_to(ROOT)}, Python {version} "
                "(functions/requirements.txt only, as deployed; the stacks deploy python312)")
    return (f"{PYTHON}, Python {version} (not .venv-function: packages beyond the function's requirements "
            "may load too; `make bench-coldstart` builds it)")


if __name__ == "__main__":
    sys.exit(main())

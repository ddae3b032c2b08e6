"""Pulumi's mock runtime with a recording monitor: the program runs with no CLI and no cloud, through the
SDK's real serialisation path.

``PulumiHarness`` installs a stack's config and a ``RecordingMonitor`` that records every
RegisterResource request exactly as the SDK sends it to the engine (type, name, parent, dependencies
and the raw property struct with its secret markers), and answers with the computed outputs a real
provider would fill in (``GcpMocks``: service account emails, the numeric secret version, object
names, function URL and Cloud Run service). Every id and computed value is derived from the inputs or
counted from 1, so two runs of one stack record the same thing.

Shared by the infra tests (tests/infra/conftest.py) and the offline plan (review/plan.py). It needs
only pulumi, so it runs in both virtualenvs.
"""

from __future__ import annotations

import itertools
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks_module
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings

from infra.stack_files import PROJECT_FILE, REPO_ROOT, stack_config  # noqa: F401 (re-exported)

STACKS_DIR = REPO_ROOT / "stacks"
STACK_FILES = sorted(STACKS_DIR.glob("Pulumi.*.yaml"))
TEST_PASSWORD = "pw-Zq8!not-in-any-file"
SECRET_SIG = rpc._special_sig_key  # "4dabf18193072939515e22adb298388d"
SECRET_MARK = rpc._special_secret_sig
PROJECT_NUMBER = "123456789012"
FUNCTION = "gcp:cloudfunctionsv2/function:Function"


@dataclass
class Registration:
    """One RegisterResource request as the engine would receive it."""

    type: str
    name: str
    urn: str
    parent: str
    dependencies: list[str]
    raw: dict[str, Any]  # the property struct, secrets still wrapped in their markers
    inputs: dict[str, Any]  # the same, deserialised by the SDK (secrets stay wrapped)


class RecordingMonitor(pulumi_mocks_module.MockMonitor):
    """The SDK's mock monitor, plus a record of each request's dependencies and raw properties."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    raw=json_format.MessageToDict(request.object),
                    inputs=rpc.deserialize_properties(request.object),
                )
            )
        return response


def service_agent_email(service: str) -> str:
    """The Google-managed service agent of an API, e.g. eventarc.googleapis.com ->
    service-<number>@gcp-sa-eventarc.iam.gserviceaccount.com."""
    return f"service-{PROJECT_NUMBER}@gcp-sa-{service.removesuffix('.googleapis.com')}.iam.gserviceaccount.com"


class GcpMocks(pulumi.runtime.Mocks):
    """Fills in the outputs GCP computes; everything else echoes the inputs (camelCase, as on the wire)."""

    def __init__(self) -> None:
        self._versions = itertools.count(1)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict]:
        state = dict(args.inputs)
        project = unwrap(state.get("project", "mock-project"))
        if args.typ == "gcp:serviceaccount/account:Account":
            state["email"] = f"{state['accountId']}@{project}.iam.gserviceaccount.com"
            state["member"] = f"serviceAccount:{state['email']}"
            state["name"] = f"projects/{project}/serviceAccounts/{state['email']}"
        elif args.typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            state["email"] = service_agent_email(state["service"])
            state["member"] = f"serviceAccount:{state['email']}"
        elif args.typ == "gcp:pubsub/topic:Topic":
            # The provider's id is the topic's full resource name, what Eventarc and Cloud Scheduler take.
            return f"projects/{project}/topics/{state['name']}", state
        elif args.typ == "gcp:secretmanager/secret:Secret":
            state["name"] = f"projects/{PROJECT_NUMBER}/secrets/{state['secretId']}"
            return state["name"], state
        elif args.typ == "gcp:secretmanager/secretVersion:SecretVersion":
            state["version"] = str(next(self._versions))
            state["name"] = f"{unwrap(state['secret'])}/versions/{state['version']}"
        elif args.typ == "gcp:storage/bucket:Bucket":
            state.setdefault("name", f"{args.name}-8f3a2c1")
        elif args.typ == "gcp:cloudfunctionsv2/function:Function":
            name, location = state["name"], state["location"]
            state["url"] = f"https://{location}-{project}.cloudfunctions.net/{name}"
            state["serviceConfig"] = {
                **state["serviceConfig"],
                "service": f"projects/{project}/locations/{location}/services/{name}",
                "uri": f"https://{name}-abc123-uc.a.run.app",
            }
            trigger_region = state["eventTrigger"]["triggerRegion"]
            state["eventTrigger"] = {
                **state["eventTrigger"],
                "trigger": f"projects/{project}/locations/{trigger_region}/triggers/{name}-552211",
            }
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, Optional[list[tuple[str, str]]]]:
        return {}, None


def plain_occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Paths where needle appears in value outside a secret marker (i.e. readable in state)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_MARK:
            return []
        return [hit for key, item in value.items() for hit in plain_occurrences(item, needle, f"{path}.{key}")]
    if isinstance(value, list):
        return [hit for index, item in enumerate(value) for hit in plain_occurrences(item, needle, f"{path}[{index}]")]
    return [path or "."] if isinstance(value, str) and needle in value else []


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARK


def unwrap(value: Any) -> Any:
    """The value inside a secret marker, or the value itself."""
    if isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARK:
        return value["value"]
    return value


@dataclass
class StackRun:
    """What one program run registered and exported."""

    registrations: list[Registration]
    exports: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str) -> Registration:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def function(self, entry_point: str) -> Registration:
        """The Cloud Function whose entry point is entry_point (process_mail or sweep_mail)."""
        found = [r for r in self.of_type(FUNCTION) if r.inputs["buildConfig"]["entryPoint"] == entry_point]
        assert len(found) == 1, f"expected one function with entry point {entry_point}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.registrations if r.urn == urn)


class PulumiHarness:
    """Installs config and mocks for one stack and runs a program under them."""

    def __init__(self) -> None:
        self.monitor: Optional[RecordingMonitor] = None

    def install(self, stack: str, config: dict[str, str], secret_keys: list[str], preview: bool = False) -> None:
        # A fresh root Stack per run, so exports and registrations never leak between tests.
        pulumi_settings.ROOT.set(None)
        pulumi.runtime.set_all_config(config, secret_keys)
        mocks = GcpMocks()
        self.monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project="mailer", stack=stack, preview=preview, monitor=self.monitor)

    def run(self, program: Callable[[], Any]) -> StackRun:
        """Run the program and wait until every registration and apply has finished."""
        assert self.monitor is not None, "install() a stack first"
        exports: dict[str, Any] = {}

        @pulumi.runtime.test
        def _run() -> Any:
            program()
            root = pulumi_settings.get_root_resource()
            outputs = dict(getattr(root, "outputs", {}) or {})
            if not outputs:
                return None
            names = list(outputs)
            return pulumi.Output.all(*outputs.values()).apply(lambda values: exports.update(zip(names, values)))

        _run()
        return StackRun(registrations=list(self.monitor.registrations), exports=exports)

    def run_main(self) -> StackRun:
        return self.run(lambda: runpy.run_path(str(REPO_ROOT / "__main__.py"), run_name="__main__"))


def stack_name(stack_file: Path) -> str:
    return stack_file.name[len("Pulumi.") : -len(".yaml")]
